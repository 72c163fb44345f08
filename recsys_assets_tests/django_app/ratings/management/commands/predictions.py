"""Print users' suggestions as JSON, read through the unmanaged UserPrediction model."""

import json

import django
from django.core.management.base import BaseCommand
from recommendations.models import UserPrediction


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("users", nargs="+", type=int)

    def handle(self, users, **options):
        rows = UserPrediction.objects.select_related("movie").filter(user_id__in=users)
        out = {
            "django": django.get_version(),
            "count": UserPrediction.objects.count(),
            "rows": [
                {
                    "id": p.id,
                    "user_id": p.user_id,
                    "movie_id": p.movie_id,
                    "title": p.movie.title,  # the join to the app's movie table
                    "rank": p.rank,
                    "score": p.score,
                    "model_version": p.model_version,
                    "created_at": p.created_at.isoformat(),  # an aware datetime (USE_TZ)
                    "source": p.source,
                }
                for p in rows
            ],
        }
        self.stdout.write(json.dumps(out))
