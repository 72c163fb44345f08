"""EASE's λ chosen on the evaluation sample, used on every rating as chosen or scaled.

    python bench/bench_ease_scale.py /tmp/ratings-5m.db [--max-ratings 1000000]

`cv_report` chooses λ on the sample (whole users, a fraction f of them) and `ranking_model`
fits every rating with λ / f: XᵀX grows with the users. This script checks that on data:

1. on the sample, as a run does: V, the seed SVD on the rest, λ chosen over the grid;
2. on every rating: a V of its own (the same rule), the seed SVD on the rest, then EASE's
   validation NDCG@10 (2,000 ranking users) with the chosen λ and with the scaled one.

A `.db` argument is a ratings database in the native schema; anything else a MovieLens file.
"""

from __future__ import annotations

import dataclasses
import time

from bench_ease_dtype import choose_on_v, dataset_and_sample  # this script's folder is on sys.path


def _validation_ndcgs(dataset, lambdas):
    """(λ chosen, every λ's validation NDCG@10) on `dataset` with its own V."""
    from recsys_assets.ml.selection.list_choice import DEFAULT_EASE

    choice = choose_on_v(dataset)(dataclasses.replace(DEFAULT_EASE, lambdas=tuple(lambdas)))
    tried = {t["ease_lambda"]: t["ndcg"] for t in choice.tried if "ease_lambda" in t}
    return choice.ease_lambda, tried


def main() -> int:
    from recsys_assets.ml.ease import DEFAULT_LAMBDAS

    dataset, sample = dataset_and_sample(__doc__)
    start = time.perf_counter()
    chosen, on_sample = _validation_ndcgs(sample.dataset, DEFAULT_LAMBDAS)
    scaled = chosen / sample.size.user_fraction
    tried = ", ".join(f"{lam:g}: {v:.5f}" for lam, v in sorted(on_sample.items()))
    print(f"on the sample: λ {chosen:g} chosen of {tried} ({time.perf_counter() - start:.0f}s)")
    start = time.perf_counter()
    _, on_all = _validation_ndcgs(dataset, sorted({chosen, scaled}))
    print(f"on every rating ({time.perf_counter() - start:.0f}s), validation NDCG@10 of EASE:")
    print(f"  λ {chosen:g} (as chosen on the sample)  {on_all[chosen]:.5f}")
    print(f"  λ {scaled:g} (scaled, what ships)  {on_all[scaled]:.5f}")
    print(f"  scaled - as chosen: {on_all[scaled] - on_all[chosen]:+.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
