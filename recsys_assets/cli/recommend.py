"""`recsys recommend USER`: a user's top-N from the champion, with titles."""

from __future__ import annotations

import argparse

from recsys_assets.ml.artifacts import ArtifactError, ArtifactStore
from recsys_assets.usage import UsageError, open_db


def ranking_header(source: str, policy: object, manifest: dict | None = None) -> str:
    """How a recommendation list was ranked, in words (the `recsys recommend` header)."""
    if source == "svd":
        weights = policy.as_dict()
        return (
            "ranked by the champion's blend: "
            f"{weights['rating_weight']:g} x predicted rating + "
            f"{weights['popularity_weight']:g} x popularity + "
            f"{weights['taste_weight']:g} x taste similarity"
        )
    if source == "ease":
        ease = (manifest or {}).get("ranking_model") or {}
        lam = f", λ={ease['lambda']:g}" if "lambda" in ease else ""
        return f"ranked by the EASE ranking model (item-item{lam}) over the user's rated movies"
    if source == "popular":
        return (
            "ranked by popularity (ratings per movie): the user has fewer than "
            f"{policy.min_user_ratings} training ratings or is unknown to the model"
        )
    return f"ranked by {source or 'the model'}"


def cmd_recommend(args: argparse.Namespace) -> int:
    from recsys_assets.ml.ranking import RankingPolicy
    from recsys_assets.serving import Recommender

    recommender = Recommender(ArtifactStore.from_env())
    try:
        manifest = recommender.manifest  # no champion: say so before touching the database
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    database = open_db()
    # As user_predictions: movies the user rated without a value are not suggested.
    unrated = database.read_unrated_pairs([args.user])["movie_id"].tolist()
    recs = recommender.recommend(args.user, n=args.n, exclude=tuple(unrated))
    titles = database.movie_titles()
    source = recs[0].source if recs else "-"
    policy = RankingPolicy.from_manifest(manifest)
    print(f"user {args.user}: top {len(recs)} from model {manifest['version']}")
    header = ranking_header(source, policy, manifest)
    print(f"# {header}; listed in that order (as user_predictions ships)")
    print("# score = the SVD's predicted rating for the user, shown for reference")
    print(f"{'rank':>4}  {'score':>5}  title")
    for rank, rec in enumerate(recs, 1):
        title = titles.get(rec.movie_id, f"movie {rec.movie_id}")
        print(f"{rank:>4}  {rec.score:>5.2f}  {title}")
    return 0
