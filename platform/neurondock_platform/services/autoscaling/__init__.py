"""Application Auto Scaling for SageMaker variants: targets, policies, schedules, activities (docs/autoscaling.md)."""
