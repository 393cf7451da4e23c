"""A scheduled function: Aloft sends it the EventBridge scheduled event every
minute, as AWS would with `rate(1 minute)`. Watch it with `aloft logs -f heartbeat`."""


def handler(event, context):
    print(f"tick {event['time']} ({event['detail-type']}, request {context.aws_request_id})")
    return {"tick": event["time"]}
