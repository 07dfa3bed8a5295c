"""The compilation job operations: Create, Describe, List, Stop and Delete."""

from __future__ import annotations

from typing import Any

from neurondock_platform.api import compilation_shapes, context
from neurondock_platform.api.sagemaker.operations._common import (
    listing,
    owner,
    page_request,
    sagemaker_operation,
    timestamp,
)
from neurondock_platform.services import compilation_jobs, pagination


@sagemaker_operation("CreateCompilationJob")
def create_compilation_job(params: dict[str, Any]) -> dict[str, Any]:
    job = compilation_jobs.create_compilation_job(
        context.db(),
        **owner(),
        name=params["CompilationJobName"],
        role_arn=params["RoleArn"],
        input_config=params.get("InputConfig"),
        output_config=params["OutputConfig"],
        stopping_condition=params["StoppingCondition"],
        model_package_version_arn=params.get("ModelPackageVersionArn"),
        vpc_config=params.get("VpcConfig"),
        tag_list=params.get("Tags"),
    )
    return {"CompilationJobArn": job.arn}


@sagemaker_operation("DescribeCompilationJob")
def describe_compilation_job(params: dict[str, Any]) -> dict[str, Any]:
    job = compilation_jobs.get_compilation_job(context.db(), **owner(), name=params["CompilationJobName"])
    return compilation_shapes.describe_compilation_job(job)


@sagemaker_operation("ListCompilationJobs")
def list_compilation_jobs(params: dict[str, Any]) -> dict[str, Any]:
    page = compilation_jobs.list_compilation_jobs(
        context.db(),
        account_id=context.auth().account_id,
        # ListCompilationJobs is the one List* whose SortOrder defaults to Ascending.
        page=page_request(params, default_order=pagination.ASCENDING),
        name_contains=params.get("NameContains"),
        status=params.get("StatusEquals"),
        created_before=timestamp(params, "CreationTimeBefore"),
        created_after=timestamp(params, "CreationTimeAfter"),
        modified_before=timestamp(params, "LastModifiedTimeBefore"),
        modified_after=timestamp(params, "LastModifiedTimeAfter"),
    )
    return listing("CompilationJobSummaries", page, compilation_shapes.compilation_job_summary)


@sagemaker_operation("StopCompilationJob")
def stop_compilation_job(params: dict[str, Any]) -> dict[str, Any]:
    compilation_jobs.stop_compilation_job(context.db(), **owner(), name=params["CompilationJobName"])
    return {}


@sagemaker_operation("DeleteCompilationJob")
def delete_compilation_job(params: dict[str, Any]) -> dict[str, Any]:
    compilation_jobs.delete_compilation_job(context.db(), **owner(), name=params["CompilationJobName"])
    return {}
