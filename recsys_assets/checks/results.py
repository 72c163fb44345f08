"""What the check modules share: severities, and a plain check's result as a multi-check's."""

import dagster as dg

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def as_spec(spec: dg.AssetCheckSpec, result: dg.AssetCheckResult) -> dg.AssetCheckResult:
    """`result` (of a plain check function) as a multi-check's evaluation of `spec`."""
    return dg.AssetCheckResult(
        passed=result.passed,
        asset_key=spec.asset_key,
        check_name=spec.name,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
    )
