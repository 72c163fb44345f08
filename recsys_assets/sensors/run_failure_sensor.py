"""`run_failure_alert`: log which asset (step) failed and why; POST it to a webhook if set.

"Why" includes every failed asset check of the run with its description and metadata (a
blocking check's step error alone only says that a check failed).

The webhook (RECSYS_ALERT_WEBHOOK_URL, read with the other settings when the definitions load)
receives one JSON object per failed run — e.g. a Slack/Teams incoming-webhook relay or an
internal alerting endpoint.
"""

import json
import urllib.error
import urllib.request
from typing import Any

import dagster as dg

WEBHOOK_TIMEOUT_SECONDS = 10


def _error_text(error: Any) -> str:
    if error is None:
        return "unknown error"
    message = error.message.strip()
    # SerializableErrorInfo prefixes the exception class: bare, or with its module path for
    # Dagster's own (dagster...Failure: no usable ...). Drop it; a user exception keeps its
    # module path, which says where it came from.
    head, sep, text = message.partition(": ")
    if sep and error.cls_name:
        bare = head == error.cls_name
        if bare or (head.startswith("dagster.") and head.endswith(f".{error.cls_name}")):
            return text
    return message


def _metadata_values(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, Any]]:
    """The run's failed asset checks with their own reason (description) and metadata.

    A blocking check fails its step with only "N blocking asset check(s) failed"; what the
    check measured (e.g. the RMSE figures of a gate) is in its evaluation event.
    """
    checks = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        checks.append(
            {
                "asset": evaluation.asset_key.to_user_string(),
                "check": evaluation.check_name,
                "severity": evaluation.severity.value,
                "description": evaluation.description or "",
                "metadata": _metadata_values(evaluation.metadata),
            }
        )
    return checks


def failure_report(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    """The failed run, its failed steps (the asset or op each one computes) and their errors,
    and the failed asset checks with their reasons."""
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        steps.append(
            {
                # Asset steps are keyed by the asset's name; the op of the refresh job writes
                # user_predictions.
                "step": event.step_key,
                "asset": event.asset_key.to_user_string() if event.asset_key else event.step_key,
                "error": _error_text(error),
                "error_class": error.cls_name if error else None,
            }
        )
    return {
        "status": "FAILURE",
        "run_id": run.run_id,
        "job": run.job_name,
        "tags": dict(run.tags),
        "message": context.failure_event.message,
        "failed_steps": steps,
        "failed_checks": failed_checks(context.instance, run.run_id),
    }


def _short_scalar(value: Any) -> bool:
    # Numbers and short strings go into the log line; tables and JSON stay in the webhook body.
    if isinstance(value, str):
        return len(value) <= 80 and "\n" not in value
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def post_json(url: str, payload: dict[str, Any]) -> int:
    """POST `payload` as JSON; return the HTTP status. Raises OSError/HTTPError on failure."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "recsys-assets"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
        return response.status


def alert_failed_run(
    context: dg.RunFailureSensorContext, webhook_url: str | None = None
) -> dict[str, Any]:
    """Log the failure; POST it to `webhook_url` (RECSYS_ALERT_WEBHOOK_URL) if set. Returns the
    report, with `webhook_status` (HTTP status, or the error text if the POST failed) when one
    was sent."""
    report = failure_report(context)
    failed = (
        ", ".join(f"{s['asset']}: {s['error'].splitlines()[0]}" for s in report["failed_steps"])
        or report["message"]
    )
    for check in report["failed_checks"]:
        # The check's own reason and figures, not just "1 blocking asset check failed".
        figures = ", ".join(f"{k}={v}" for k, v in check["metadata"].items() if _short_scalar(v))
        failed += (
            f"; check {check['asset']}:{check['check']} ({check['severity']}): "
            f"{check['description']}" + (f" [{figures}]" if figures else "")
        )
    context.log.error("run %s of %s failed — %s", report["run_id"], report["job"], failed)
    url = webhook_url
    if not url:
        return report
    try:
        status = post_json(url, report)
    except (OSError, urllib.error.HTTPError) as exc:
        # The alert is best effort: a dead webhook must not block later failure alerts.
        context.log.warning("alert webhook %s failed: %s", url.split("?")[0], exc)
        return {**report, "webhook_status": str(exc)}
    context.log.info("posted failure alert for run %s (HTTP %d)", report["run_id"], status)
    return {**report, "webhook_status": status}


def build_run_failure_sensor(webhook_url: str | None = None) -> dg.SensorDefinition:
    """`run_failure_alert`, posting to `webhook_url` (RECSYS_ALERT_WEBHOOK_URL) when given."""

    @dg.run_failure_sensor(
        name="run_failure_alert",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Logs the failed asset and error of every failed run; POSTs JSON to "
        "RECSYS_ALERT_WEBHOOK_URL when set.",
    )
    def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
        alert_failed_run(context, webhook_url)

    return run_failure_alert
