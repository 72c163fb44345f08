"""The seed app's Rating: any content type, the latest rating of an object per user active."""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.signals import post_save
from django.dispatch import receiver


class Rating(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    value = models.FloatField(null=True, blank=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    content_object = GenericForeignKey("content_type", "object_id")
    active = models.BooleanField(default=True)
    timestamp = models.DateTimeField(auto_now_add=True)


@receiver(post_save, sender=Rating)
def deactivate_older_ratings(sender, instance: Rating, created: bool, **kwargs) -> None:
    """A new rating replaces the user's previous one of the same object (the seed's signal)."""
    if created and instance.active:
        Rating.objects.filter(
            user_id=instance.user_id,
            content_type_id=instance.content_type_id,
            object_id=instance.object_id,
            active=True,
        ).exclude(pk=instance.pk).update(active=False)
