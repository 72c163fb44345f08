"""Save ratings one by one through the ORM, as the app's views do (post_save fires).

Arguments: USER:KIND:OBJECT:VALUE ... (KIND movie|show; VALUE a number or `null`).
"""

from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand
from movies.models import Movie
from shows.models import TVShow

from ratings.models import Rating


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("ratings", nargs="+")

    def handle(self, ratings, **options):
        types = {
            "movie": ContentType.objects.get_for_model(Movie),
            "show": ContentType.objects.get_for_model(TVShow),
        }
        for spec in ratings:
            user, kind, obj, value = spec.split(":")
            Rating.objects.create(
                user_id=int(user),
                content_type=types[kind],
                object_id=int(obj),
                value=None if value == "null" else float(value),
            )
        self.stdout.write(f"saved {len(ratings)} ratings")
