#!/usr/bin/env bash
# Nightly attribution audit: attribute one date's partition, then compare it with the previous
# date's run and write the HTML report (with drift against that run).
#
#   schedules/nightly_audit.sh CONFIG RUNS_ROOT [DATE]
#
# CONFIG: a run config whose input may use {date} (e.g. configs/nightly_digits.yaml);
# RUNS_ROOT: where runs go, one directory per date (RUNS_ROOT/dt=YYYY-MM-DD);
# DATE: the partition (default: yesterday, UTC).
# Exit status: 0 done (no drift), 2 bad config or input, 3 the run failed its checks, 4 drift
# beyond the thresholds (the run and its report are still written). Extra compare thresholds can be
# passed in COMPARE_FLAGS, e.g. COMPARE_FLAGS="--min-spearman 0.9".
#
# cron (02:30 UTC every night; % must be escaped in crontab lines):
#   30 2 * * * cd /srv/attribution && schedules/nightly_audit.sh configs/nightly_digits.yaml /srv/audits >> /var/log/attribution-audit.log 2>&1
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG RUNS_ROOT [DATE]" >&2
  exit 2
fi
CONFIG=$1
RUNS=$2
DATE=${3:-$(date -u -d yesterday +%F)}
PREVIOUS=$(date -u -d "$DATE - 1 day" +%F)
CLI=${ATTRIBUTION_PIPELINE:-attribution-pipeline}
RUN="$RUNS/dt=$DATE"
BASELINE="$RUNS/dt=$PREVIOUS"

complete() { [ -f "$1/manifest.json" ] && grep -q '"status": "complete"' "$1/manifest.json"; }

if complete "$RUN"; then
  echo "$RUN is already complete: not recomputed (rerun with OVERWRITE=1 to redo it)"
  if [ -n "${OVERWRITE:-}" ]; then
    $CLI run --config "$CONFIG" --date "$DATE" --output "$RUN" --overwrite
  fi
else
  # A directory left by a run that did not complete is replaced (it has no complete manifest).
  $CLI run --config "$CONFIG" --date "$DATE" --output "$RUN"
fi

if complete "$BASELINE"; then
  $CLI report "$RUN" --baseline "$BASELINE" --out "$RUN/report.html"
  # shellcheck disable=SC2086
  $CLI compare "$BASELINE" "$RUN" --json "$RUN/drift.json" --fail-on-drift ${COMPARE_FLAGS:-}
else
  echo "no complete run for $PREVIOUS in $RUNS: report without a baseline"
  $CLI report "$RUN" --out "$RUN/report.html"
fi
