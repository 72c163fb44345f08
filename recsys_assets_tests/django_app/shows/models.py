from django.db import models


class TVShow(models.Model):
    """A second rated content type: its ratings share ratings_rating with the movies'."""

    title = models.CharField(max_length=255)
