"""Aloft's Python bootstrap: runs an unmodified AWS Lambda Python handler
against the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API.

bootstrap.py, the script Python runs, imports this module and calls
main(): as a module it can be loaded from a precompiled .pyc (see
runtimes.CompilePython) instead of being compiled at every cold start.
_HANDLER is "module.function"; the module may be a nested path written
with slashes or dots ("pkg/app.handler", "pkg.app.handler"), relative to
LAMBDA_TASK_ROOT, which is put first on sys.path. Standard library only.
"""

import _json
import _socket
import io
import os
import sys
import time

# A cold start should cost Python itself and the handler, little more.
# http.client (with the email and ssl modules it pulls in), socket, json
# (through re and enum), importlib, decimal and traceback each cost
# milliseconds to import, so the client below speaks the little HTTP/1.1
# the Runtime API needs over _socket, JSON goes through the C accelerator
# _json that the json module itself uses, and json and traceback are
# imported only on the error paths that need their messages.

API = os.environ.get("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
TASK_ROOT = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())


class Headers(dict):
    """Response headers; get() ignores case."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)


class RuntimeClient:
    """A Runtime API client over one persistent HTTP/1.1 connection."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.host, self.port = host or address, int(port or 80)
        self.sock = None
        self.rfile = None

    def _connect(self):
        err = None
        # getaddrinfo encodes a str host with the idna codec, whose import
        # (stringprep, re) costs a cold start ~10 ms; an ASCII host as
        # bytes skips it.
        host = self.host.encode("ascii") if self.host.isascii() else self.host
        for family, kind, proto, _, addr in _socket.getaddrinfo(host, self.port, 0, _socket.SOCK_STREAM):
            sock = _socket.socket(family, kind, proto)
            try:
                sock.connect(addr)
            except OSError as e:
                sock.close()
                err = e
                continue
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            self.sock = sock
            self.rfile = io.open(sock.fileno(), "rb", buffering=65536, closefd=False)
            return
        raise err or OSError("cannot resolve %s" % self.host)

    def _close(self):
        for f in (self.rfile, self.sock):  # the reader first: it borrows the socket's fd
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.sock = self.rfile = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                return self._exchange(method, path, body, headers or {})
            except (OSError, ValueError, EOFError):
                # A kept-alive connection may have been closed: retry once.
                self._close()
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _exchange(self, method, path, body, headers):
        lines = ["%s /2018-06-01%s HTTP/1.1" % (method, path), "Host: %s:%d" % (self.host, self.port)]
        for k, v in headers.items():
            lines.append("%s: %s" % (k, v))
        if body is not None:
            lines.append("Content-Length: %d" % len(body))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(head + body if body else head)
        status_line = self.rfile.readline(65537)
        if not status_line:
            raise EOFError("runtime api closed the connection")
        parts = status_line.split(None, 2)
        status = int(parts[1])
        resp_headers = Headers()
        while True:
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            resp_headers[name.strip().lower()] = value.strip()
        if resp_headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = self._read_chunked()
        else:
            n = int(resp_headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if n else b""
            if len(data) != n:
                raise EOFError("short body from the runtime api")
        if resp_headers.get("Connection", "").lower() == "close":
            self._close()
        return status, resp_headers, data

    def _read_chunked(self):
        out = []
        while True:
            size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(out)
            out.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def next(self):
        status, headers, body = self.request("GET", "/runtime/invocation/next")
        if status != 200:
            raise RuntimeError("GET next: status %d: %r" % (status, body))
        return headers, body

    def post_response(self, request_id, body):
        return self._post("/runtime/invocation/%s/response" % request_id, body, None)

    def post_error(self, request_id, error):
        return self._post("/runtime/invocation/%s/error" % request_id, error_json(error), error["errorType"])

    def post_init_error(self, error):
        return self._post("/runtime/init/error", error_json(error), error["errorType"])

    def _post(self, path, body, error_type):
        headers = {"Content-Type": "application/json"}
        if error_type:
            headers["Lambda-Runtime-Function-Error-Type"] = error_type
        status, _, reply = self.request("POST", path, body=body, headers=headers)
        if status != 202:
            print("aloft bootstrap: POST %s: status %d: %r" % (path, status, reply), file=sys.stderr)
        return status


class _DecodeContext:
    """The settings json.JSONDecoder hands the C scanner, at their defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_DecodeContext())
_WHITESPACE = " \t\n\r"


def loads(data):
    """json.loads for a UTF-8 document, through the C scanner; anything
    else, and every error (for json's own message), goes to json.loads.
    The scanner raises most syntax errors through json.decoder, which it
    only looks up in sys.modules: before json is imported they come out as
    a SystemError, so that too means "ask json.loads"."""
    try:
        s = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        s = s.strip(_WHITESPACE)
        if s and s[0] != "\ufeff":
            obj, end = _scan(s, 0)
            if end == len(s):
                return obj
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError, SystemError):
        pass
    import json

    return json.loads(data)


def _default(o):
    decimal = sys.modules.get("decimal")  # a Decimal exists only if decimal was imported
    if decimal is not None and isinstance(o, decimal.Decimal):
        return int(o) if o == o.to_integral_value() else float(o)
    raise TypeError("Object of type %s is not JSON serializable" % o.__class__.__name__)


def dumps(obj):
    """json.dumps(obj) with Decimal support, through the C encoder."""
    chunks = _json.make_encoder({}, _default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)(obj, 0)
    return "".join(chunks)


def error_json(error):
    return dumps(error).encode()


def error_object(exc, error_type=None, message=None, stack=True):
    """The Lambda error shape for an exception; without a stack trace when
    stack is false (an error of the bootstrap's own JSON coding, whose
    frames say nothing about the function)."""
    import traceback

    tb = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ and stack else []
    # Only the function's frames, as on Lambda: not the bootstrap's own,
    # nor the import system's.
    tb = [f for f in tb if f.filename != __file__ and not f.filename.startswith("<frozen ")]
    return {
        "errorMessage": message if message is not None else str(exc),
        "errorType": error_type or type(exc).__name__,
        "stackTrace": traceback.format_list(tb),
    }


def log_error(error):
    """Writes an invocation's error to the function's log with its
    traceback, as Lambda's runtime does: an async invocation's log is where
    its user looks."""
    lines = ["[ERROR] %s: %s" % (error["errorType"], error["errorMessage"])]
    if error["stackTrace"]:
        lines.append("Traceback (most recent call last):")
        lines.append("".join(error["stackTrace"]).rstrip("\n"))
    print("\n".join(lines), file=sys.stderr)


class Client:
    def __init__(self, d):
        self.installation_id = d.get("installation_id")
        self.app_title = d.get("app_title")
        self.app_version_name = d.get("app_version_name")
        self.app_version_code = d.get("app_version_code")
        self.app_package_name = d.get("app_package_name")


class ClientContext:
    def __init__(self, d):
        self.client = Client(d.get("client") or d.get("Client") or {})
        self.custom = d.get("custom")
        self.env = d.get("env")


class CognitoIdentity:
    def __init__(self, d):
        self.cognito_identity_id = d.get("cognitoIdentityId")
        self.cognito_identity_pool_id = d.get("cognitoIdentityPoolId")


def _json_header(headers, name):
    v = headers.get(name)
    if not v:
        return None
    try:
        d = loads(v)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


class LambdaContext:
    def __init__(self, headers):
        env = os.environ
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms") or 0)
        cc = _json_header(headers, "Lambda-Runtime-Client-Context")
        self.client_context = ClientContext(cc) if cc is not None else None
        ident = _json_header(headers, "Lambda-Runtime-Cognito-Identity")
        self.identity = CognitoIdentity(ident) if ident is not None else None

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def __repr__(self):
        return "LambdaContext([aws_request_id=%s,function_name=%s,function_version=%s])" % (
            self.aws_request_id, self.function_name, self.function_version)


class InitError(Exception):
    def __init__(self, error):
        super().__init__(error["errorMessage"])
        self.error = error


def load_handler(spec):
    try:
        modname, fname = spec.rsplit(".", 1)
    except ValueError:
        raise InitError({"errorMessage": "Bad handler '%s': not enough values to unpack" % spec,
                         "errorType": "Runtime.MalformedHandlerName", "stackTrace": []})
    modname = modname.replace("/", ".")
    try:
        __import__(modname)
        module = sys.modules[modname]
    except ImportError as e:
        raise InitError(error_object(e, "Runtime.ImportModuleError",
                                     "Unable to import module '%s': %s" % (modname, e)))
    except SyntaxError as e:
        raise InitError(error_object(e, "Runtime.UserCodeSyntaxError",
                                     "Syntax error in module '%s': %s" % (modname, e)))
    except Exception as e:
        raise InitError(error_object(e))
    handler = getattr(module, fname, None)
    if handler is None:
        raise InitError({"errorMessage": "Handler '%s' missing on module '%s'" % (fname, modname),
                         "errorType": "Runtime.HandlerNotFound", "stackTrace": []})
    if not callable(handler):
        raise InitError({"errorMessage": "Handler '%s' on module '%s' is not callable" % (fname, modname),
                         "errorType": "Runtime.HandlerNotFound", "stackTrace": []})
    return handler


def report(client, request_id, error):
    """Logs an invocation's error and posts it."""
    log_error(error)
    client.post_error(request_id, error)


def exit_status(code):
    """The status a process ends with on sys.exit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1


def handle_one(client, handler, headers, body):
    request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
    trace = headers.get("Lambda-Runtime-Trace-Id")
    if trace:
        os.environ["_X_AMZN_TRACE_ID"] = trace
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    try:
        event = loads(body) if body else None
    except ValueError as e:
        report(client, request_id, error_object(e, "Runtime.UnmarshalError",
                                                "Unable to unmarshal input: %s" % e, stack=False))
        return
    context = LambdaContext(headers)
    try:
        result = handler(event, context)
    except SystemExit as e:
        report(client, request_id, error_object(e, "Runtime.ExitError",
                                                "RequestId: %s Error: Runtime exited with error: exit status %s" % (request_id, exit_status(e.code))))
        raise
    except Exception as e:
        report(client, request_id, error_object(e))
        return
    try:
        payload = dumps(result).encode()
    except (TypeError, ValueError) as e:
        report(client, request_id, error_object(e, "Runtime.MarshalError",
                                                "Unable to marshal response: %s" % e, stack=False))
        return
    if client.post_response(request_id, payload) == 413:
        sys.exit(1)


def main():
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    # The bootstrap's own directory must not shadow the function's modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, TASK_ROOT)
    client = RuntimeClient(API)
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except InitError as e:
        print("[ERROR] %s: %s" % (e.error["errorType"], e.error["errorMessage"]), file=sys.stderr)
        client.post_init_error(e.error)
        sys.exit(1)
    while True:
        headers, body = client.next()
        handle_one(client, handler, headers, body)


if __name__ == "__main__":
    main()
