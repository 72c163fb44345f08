"""Bulk-load users, movies, TV shows and ratings from a CSV (user_id,kind,object_id,value).

`kind` is `movie` or `show`; an empty value is a rating without a value (NULL). bulk_create
skips post_save, so every CSV row should be a distinct (user, object): re-ratings go through
the `rate` command, as the app's views would save them.
"""

import csv

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand
from movies.models import Movie
from shows.models import TVShow

from ratings.models import Rating


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--users", type=int, required=True)
        parser.add_argument("--movies", type=int, required=True)
        parser.add_argument("--shows", type=int, required=True)

    def handle(self, path, users, movies, shows, **options):
        User = get_user_model()  # noqa: N806 (Django's idiom)
        User.objects.bulk_create(User(id=i, username=f"user{i}") for i in range(1, users + 1))
        Movie.objects.bulk_create(Movie(id=i, title=f"Movie {i}") for i in range(1, movies + 1))
        TVShow.objects.bulk_create(TVShow(id=i, title=f"Show {i}") for i in range(1, shows + 1))
        types = {
            "movie": ContentType.objects.get_for_model(Movie),
            "show": ContentType.objects.get_for_model(TVShow),
        }
        with open(path, newline="") as handle:
            rows = [
                Rating(
                    user_id=int(row["user_id"]),
                    content_type=types[row["kind"]],
                    object_id=int(row["object_id"]),
                    value=float(row["value"]) if row["value"] else None,
                )
                for row in csv.DictReader(handle)
            ]
        Rating.objects.bulk_create(rows, batch_size=5000)
        self.stdout.write(f"loaded {len(rows)} ratings")
