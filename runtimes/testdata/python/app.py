"""Handlers the Python bootstrap tests call, one per process via _HANDLER."""
import decimal
import os
import sys


def echo(event, context):
    return event


def exits(event, context):
    sys.exit(event)


def fail(event, context):
    raise ValueError("bad value")


def info(event, context):
    cc = context.client_context
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "client_app": cc.client.app_title if cc else None,
        "identity": context.identity.cognito_identity_id if context.identity else None,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
    }


def unserialisable(event, context):
    return {"x": object()}


def decimals(event, context):
    return {"i": decimal.Decimal("3"), "f": decimal.Decimal("1.5")}


def printer(event, context):
    print("hello from python")
    return "printed"


not_callable = 42


def paths(event, context):
    import sys

    return sys.path
