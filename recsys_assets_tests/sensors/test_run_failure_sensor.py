"""run_failure_alert: logs the failed asset and posts JSON to a real HTTP server on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from recsys_assets.assets.config import training_run_config
from recsys_assets.definitions import all_assets, all_checks, build_defs
from recsys_assets.sensors.run_failure_sensor import alert_failed_run
from recsys_assets_tests.assets.test_gates import BAD_SVD
from recsys_assets_tests.conftest import FAST_CONFIG, make_resources


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "body": json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def _failed_run_context(instance, home, database):
    result = dg.materialize(
        all_assets,
        resources=make_resources(home, database),
        run_config=FAST_CONFIG,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()


def test_failed_run_is_posted_to_the_webhook(recsys_home, ratings_db, webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv("RECSYS_ALERT_WEBHOOK_URL", url)
    # The sensor as the definitions build it, with the URL from the environment.
    sensor = build_defs().resolve_sensor_def("run_failure_alert")
    with dg.instance_for_test() as instance:
        # An empty ratings table: ratings_df fails with a message that says so.
        context = _failed_run_context(instance, recsys_home, ratings_db)
        sensor(context)
    (alert,) = received
    assert alert["path"] == "/alerts"
    body = alert["body"]
    assert body["status"] == "FAILURE" and body["run_id"] == context.dagster_run.run_id
    (step,) = body["failed_steps"]
    assert step["asset"] == "ratings_df" and step["step"] == "ratings_df"
    assert "no usable ratings" in step["error"]


def test_without_webhook_it_only_logs(recsys_home, ratings_db, capfd):
    with dg.instance_for_test() as instance:
        context = _failed_run_context(instance, recsys_home, ratings_db)
        capfd.readouterr()
        report = alert_failed_run(context)
    assert "webhook_status" not in report
    assert report["failed_steps"][0]["error"].startswith("no usable ratings in sqlite:")
    logged = capfd.readouterr().err
    assert f"run {context.dagster_run.run_id} of " in logged
    assert "failed — ratings_df: no usable ratings" in logged


def test_dead_webhook_does_not_break_the_sensor(recsys_home, ratings_db):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    with dg.instance_for_test() as instance:
        context = _failed_run_context(instance, recsys_home, ratings_db)
        report = alert_failed_run(context, "http://127.0.0.1:9/nothing-listens")
    assert "refused" in report["webhook_status"].lower()


def test_failed_gate_alert_carries_the_check_reason_and_figures(
    recsys_home, demo_db, webhook, monkeypatch, capfd
):
    url, received = webhook
    with dg.instance_for_test() as instance:
        # A model worse than BaselineOnly: the blocking beats_baseline gate fails.
        result = dg.materialize(
            [*all_assets, *all_checks],
            resources=make_resources(recsys_home, demo_db),
            run_config=training_run_config(n_folds=4, top_n=10, tuning="fixed", **BAD_SVD),
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
        capfd.readouterr()
        report = alert_failed_run(context, url)
    (check,) = report["failed_checks"]
    assert (check["asset"], check["check"], check["severity"]) == (
        "model_artifact",
        "beats_baseline",
        "ERROR",
    )
    assert "not better, not promoted" in check["description"]
    assert check["metadata"]["cv_rmse"] > check["metadata"]["baseline_rmse"]
    (body,) = [r["body"] for r in received]
    assert body["failed_checks"] == json.loads(json.dumps(report["failed_checks"]))
    logged = capfd.readouterr().err
    assert "check model_artifact:beats_baseline (ERROR): " in logged
    assert "not better, not promoted" in logged and "baseline_rmse=" in logged
