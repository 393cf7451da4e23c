raise RuntimeError("load failed")


def handler(event, context):
    return None
