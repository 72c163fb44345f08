"""The compiled SVD fit is `SVD.fit`, bit for bit, and its model needs no numba to be used."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from surprise import SVD, Dataset, Reader

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.stripped_svd import strip_svd
from recsys_assets.ml.svd_sgd import fit_compiled, numba_cache_dir
from recsys_assets.ml.training import SVDParams, fit_engine_of, fit_svd

FACTORS = ("pu", "qi", "bu", "bi")


def _dataset(frame: pd.DataFrame, scale: tuple[float, float] = (1, 5)) -> CompactDataset:
    return CompactDataset.from_df(
        frame[["user_id", "movie_id", "rating"]], Reader(rating_scale=scale)
    )


@pytest.fixture(scope="module")
def movielens_like() -> pd.DataFrame:
    _, ratings = generate_demo_ratings(n_users=300, n_movies=400, n_ratings=20_000, seed=4)
    return ratings


def _both(trainset_of, **svd) -> tuple[SVD, SVD]:
    """(SVD.fit, fit_compiled) on equal trainsets with the same constructor arguments."""
    reference = SVD(**svd).fit(trainset_of())
    compiled = fit_compiled(SVD(**svd), trainset_of())
    return reference, compiled


def _assert_identical(reference: SVD, compiled: SVD) -> None:
    for name in FACTORS:
        ours, theirs = getattr(compiled, name), getattr(reference, name)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
        assert np.array_equal(ours, theirs), f"{name} differs"
    # Everything else SVD.fit leaves on the instance is the same too (fit_svd adds which
    # engine fitted it).
    assert set(vars(compiled)) - {"fit_engine"} == set(vars(reference)) - {"fit_engine"}
    for name in set(vars(reference)) - {*FACTORS, "trainset", "fit_engine"}:
        assert vars(compiled)[name] == vars(reference)[name], name


@pytest.mark.parametrize("n_epochs", [0, 1, 20])
def test_movielens_shaped_data_gives_the_same_factors(movielens_like, n_epochs):
    data = _dataset(movielens_like)
    reference, compiled = _both(
        data.build_full_trainset, n_epochs=n_epochs, n_factors=20, random_state=42
    )
    _assert_identical(reference, compiled)


def test_the_projects_fit_is_surprises_own_bit_for_bit(movielens_like):
    # The one end-to-end check against Surprise itself: its Dataset.load_from_df + SVD.fit
    # with the seed's SVD(n_epochs=20, ...) and the project's CompactDataset + fit_svd.
    frame = movielens_like[["user_id", "movie_id", "rating"]]
    surprise_data = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5)))
    reference = SVDParams().build().fit(surprise_data.build_full_trainset())
    compiled = fit_svd(_dataset(movielens_like).build_full_trainset(), SVDParams())
    _assert_identical(reference, compiled)


ODD_SHAPES = {
    "one user": pd.DataFrame({"user_id": [7] * 5, "movie_id": [1, 2, 3, 4, 5], "rating": 3.0}),
    "one item": pd.DataFrame({"user_id": [1, 2, 3, 4], "movie_id": 9, "rating": [1.0, 5, 2, 4]}),
    "one rating": pd.DataFrame({"user_id": [1], "movie_id": [1], "rating": [4.0]}),
    "a user with one rating": pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 3, 3],
            "movie_id": [1, 2, 3, 2, 1, 3],
            "rating": [5.0, 3, 4, 1, 2, 5],
        }
    ),
    "integer ratings": pd.DataFrame(
        {"user_id": [1, 1, 2, 2, 3], "movie_id": [1, 2, 1, 3, 2], "rating": [5, 3, 4, 1, 2]}
    ),
    # Consecutive ratings of the same (user, movie): the fused loop sums the next rating's
    # dot product over the row it is updating.
    "a repeated rating": pd.DataFrame(
        {"user_id": [1, 1, 1, 2, 2], "movie_id": [4, 4, 5, 4, 4], "rating": [5.0, 1, 3, 2, 4]}
    ),
    "string ids": pd.DataFrame(
        {"user_id": ["b", "a", "b", "c"], "movie_id": ["x", "y", "y", "x"], "rating": 2.5}
    ),
}


@pytest.mark.parametrize("shape", sorted(ODD_SHAPES))
@pytest.mark.parametrize("n_epochs", [0, 1, 20])
def test_odd_shapes(shape, n_epochs):
    data = _dataset(ODD_SHAPES[shape])
    reference, compiled = _both(data.build_full_trainset, n_epochs=n_epochs, random_state=1)
    _assert_identical(reference, compiled)


def _half_stars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, 40, n),
            "movie_id": rng.integers(0, 60, n),
            "rating": rng.integers(1, 11, n) / 2.0,
        }
    ).drop_duplicates(["user_id", "movie_id"])


@pytest.mark.parametrize(
    "svd",
    [
        {"n_factors": 1},
        {"n_factors": 0},
        {"biased": False},
        {"biased": False, "n_factors": 3, "init_mean": 0.2, "init_std_dev": 0.3},
        {
            "lr_bu": 0.011,
            "lr_bi": 0.007,
            "lr_pu": 0.013,
            "lr_qi": 0.003,
            "reg_bu": 0.05,
            "reg_bi": 0.002,
            "reg_pu": 0.09,
            "reg_qi": 0.04,
        },
        {"lr_all": 0.05, "reg_all": 0.5, "n_factors": 7, "random_state": 123},
    ],
    ids=repr,
)
def test_half_star_scale_and_every_rate(svd):
    data = _dataset(_half_stars(3000, 0), scale=(0.5, 5))
    reference, compiled = _both(
        data.build_full_trainset, **{"n_epochs": 20, "random_state": 5, **svd}
    )
    _assert_identical(reference, compiled)


def test_random_state_instance_and_none_draw_like_surprise(movielens_like):
    data = _dataset(movielens_like.head(2000))
    reference = SVD(n_epochs=3, random_state=np.random.RandomState(8)).fit(
        data.build_full_trainset()
    )
    compiled = fit_compiled(
        SVD(n_epochs=3, random_state=np.random.RandomState(8)), data.build_full_trainset()
    )
    for name in FACTORS:
        assert np.array_equal(getattr(reference, name), getattr(compiled, name))
    np.random.seed(3)
    reference = SVD(n_epochs=3).fit(data.build_full_trainset())
    np.random.seed(3)
    compiled = fit_compiled(SVD(n_epochs=3), data.build_full_trainset())
    for name in FACTORS:
        assert np.array_equal(getattr(reference, name), getattr(compiled, name))


def _pairs(frame: pd.DataFrame) -> list[tuple[object, object]]:
    known = list(frame[["user_id", "movie_id"]].head(50).itertuples(index=False, name=None))
    user, movie = known[0]
    # Unknown user, unknown movie, both unknown.
    return [*known, (-1, movie), (user, -1), (-1, -1)]


@pytest.mark.parametrize("biased", [True, False])
def test_predict_and_test_equal_for_known_and_unknown(movielens_like, biased):
    data = _dataset(movielens_like)
    reference, compiled = _both(
        data.build_full_trainset, n_epochs=5, n_factors=10, random_state=2, biased=biased
    )
    for uid, iid in _pairs(movielens_like):
        ours, theirs = compiled.predict(uid, iid), reference.predict(uid, iid)
        assert ours.est == theirs.est and ours.details == theirs.details
    testset = reference.trainset.build_testset()[:500]
    assert [p.est for p in compiled.test(testset)] == [p.est for p in reference.test(testset)]


_LOAD_AND_PREDICT = """
import json, pickle, sys
model = pickle.load(open(sys.argv[1], "rb"))
assert "numba" not in sys.modules, "unpickling the model imported numba"
pairs = json.loads(sys.argv[2])
print(json.dumps([model.predict(u, i).est for u, i in pairs]))
assert "numba" not in sys.modules, "predicting imported numba"
"""


@pytest.mark.parametrize("stripped", [False, True], ids=["full", "stripped"])
def test_pickled_model_predicts_the_same_without_numba(movielens_like, tmp_path, stripped):
    data = _dataset(movielens_like)
    model = fit_svd(data.build_full_trainset(), SVDParams(n_epochs=5, n_factors=10))
    assert fit_engine_of(model) == "compiled"
    model = strip_svd(model) if stripped else model
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    pairs = [(int(u), int(i)) for u, i in _pairs(movielens_like)]
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_PREDICT, str(path), json.dumps(pairs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == [model.predict(u, i).est for u, i in pairs]


def test_engines_give_the_same_model_and_say_which_fitted_it(movielens_like):
    data = _dataset(movielens_like)
    params = SVDParams(n_epochs=4, n_factors=6)
    compiled = fit_svd(data.build_full_trainset(), params)
    surprise = fit_svd(
        data.build_full_trainset(), SVDParams(n_epochs=4, n_factors=6, engine="surprise")
    )
    _assert_identical(surprise, compiled)
    assert (fit_engine_of(compiled), fit_engine_of(surprise)) == ("compiled", "surprise")
    assert fit_engine_of(SVD()) == "surprise"  # models pickled before the switch


def test_engine_is_not_a_hyperparameter():
    params = SVDParams(engine="surprise")
    assert "engine" not in params.as_dict()
    assert params == SVDParams()  # the same model either way
    with pytest.raises(ValueError, match="engine must be one of compiled, surprise, got 'cuda'"):
        SVDParams(engine="cuda")


def test_compiled_fit_logs_each_epoch(movielens_like, caplog):
    log = logging.getLogger("test-compiled-fit")
    data = _dataset(movielens_like.head(500))
    with caplog.at_level(logging.INFO, logger="test-compiled-fit"):
        fit_svd(data.build_full_trainset(), SVDParams(n_epochs=3), log=log, progress_interval=0)
    assert [r.getMessage() for r in caplog.records] == [
        f"svd fit: Processing epoch {e}" for e in range(3)
    ]


def test_numba_cache_dir_is_under_recsys_home_unless_numba_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    assert numba_cache_dir() == tmp_path / "home" / "numba_cache"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert numba_cache_dir() == tmp_path / "elsewhere"


_FIT_IN_FRESH_PROCESS = """
import json, sys
import numpy as np
from surprise import SVD, Reader
import pandas as pd
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.svd_sgd import fit_compiled, kernel_load_seconds
frame = pd.DataFrame({"u": [1, 1, 2, 3], "i": [1, 2, 2, 3], "r": [4.0, 2.0, 5.0, 3.0]})
data = CompactDataset.from_df(frame, Reader(rating_scale=(1, 5)))
a = SVD(n_epochs=5, random_state=0).fit(data.build_full_trainset())
b = fit_compiled(SVD(n_epochs=5, random_state=0), data.build_full_trainset())
same = all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("pu", "qi", "bu", "bi"))
print(json.dumps({"same": same, "seconds": kernel_load_seconds()}))
"""


def _fit_in_fresh_process(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _FIT_IN_FRESH_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={**os.environ, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"stderr": out.stderr}


def test_compiled_once_then_loaded_from_recsys_home(tmp_path):
    env = {"RECSYS_HOME": str(tmp_path / "home"), "NUMBA_CACHE_DIR": ""}
    first = _fit_in_fresh_process(env)
    cached = list((tmp_path / "home" / "numba_cache").rglob("*.nbi"))
    assert first["same"] and len(cached) == 1
    again = _fit_in_fresh_process(env)
    assert again["same"]
    # The second process loaded the stored code instead of compiling (no new index).
    assert list((tmp_path / "home" / "numba_cache").rglob("*.nbi")) == cached


def test_an_unwritable_cache_still_fits(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # A directory below a regular file can never be created, whoever runs the test.
    result = _fit_in_fresh_process({"NUMBA_CACHE_DIR": str(Path(blocker) / "cache")})
    assert result["same"]
    assert "not writable" in result["stderr"]
