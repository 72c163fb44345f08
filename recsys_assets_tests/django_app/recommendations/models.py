"""recsys_assets' `user_predictions` table, as the README documents it: unmanaged (the
pipeline creates and writes it; the app only reads). Works on Django 4.2 LTS and 5.x."""

from django.conf import settings
from django.db import models


class UserPrediction(models.Model):
    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    movie = models.ForeignKey(
        "movies.Movie", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    rank = models.IntegerField()  # 1 = best; unique per user
    score = models.FloatField()  # the model's predicted rating
    model_version = models.TextField()
    created_at = models.DateTimeField()
    source = models.CharField(max_length=16, null=True)  # how the list was ranked

    class Meta:
        managed = False
        db_table = "user_predictions"
        ordering = ["user_id", "rank"]
