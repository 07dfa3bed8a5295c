"""CloudWatch: metric operations on the store, metric alarms, their evaluation and actions (docs/cloudwatch.md)."""
