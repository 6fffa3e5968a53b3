"""Dataset audits with no Beam import: summaries of attribution rows (mergeable accumulators),
run-to-run comparison and the HTML report."""
