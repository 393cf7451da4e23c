"""An unmodified AWS Lambda Python handler."""
import platform


def handler(event, context):
    if isinstance(event, dict) and "rawPath" in event:
        name = (event.get("queryStringParameters") or {}).get("name", "world")
        print(f"greeting {name}")
        return {
            "statusCode": 200,
            "headers": {"content-type": "text/plain"},
            "body": f"Hello, {name}! (from Python {platform.python_version()}, request {context.aws_request_id})\n",
        }
    return {"echo": event, "function": context.function_name,
            "remaining_ms": context.get_remaining_time_in_millis()}
