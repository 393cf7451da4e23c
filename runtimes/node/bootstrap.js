// Aloft's Node.js bootstrap: runs an unmodified AWS Lambda Node.js handler
// against the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API.
//
// Usage: /usr/bin/node /var/runtime/node/bootstrap.js
// _HANDLER is "file.function" (file relative to LAMBDA_TASK_ROOT, e.g.
// "index.handler" or "src/app.handler"; the function may be a dotted path
// into the module's exports). Files ending in .js or .cjs load with
// require, .mjs and .js under a package.json with "type":"module" with
// import(). Handler styles: async (promise), callback, context.succeed/
// fail/done, and awslambda.streamifyResponse (response streaming). No
// dependencies beyond Node's standard library.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { Writable } = require('stream');
const { pathToFileURL } = require('url');

const env = process.env;
const api = env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001';
const colon = api.lastIndexOf(':');
const apiHost = colon > 0 ? api.slice(0, colon) : api;
const apiPort = colon > 0 ? Number(api.slice(colon + 1)) : 80;
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const taskRoot = env.LAMBDA_TASK_ROOT || process.cwd();

// The awslambda global of Lambda's Node runtime, for response streaming:
// awslambda.streamifyResponse(async (event, responseStream, context) => …)
// and awslambda.HttpResponseStream.from(responseStream, {statusCode, headers}).
const streaming = Symbol.for('aws.lambda.runtime.handler.streaming');
globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[streaming] = 'response';
    return handler;
  },
  HttpResponseStream: {
    from(stream, prelude) {
      stream.setContentType('application/vnd.awslambda.http-integration-response');
      stream.write(JSON.stringify(prelude || {}));
      stream.write(Buffer.alloc(8)); // 8 NUL bytes end the prelude
      return stream;
    },
  },
};

// request performs one Runtime API call and resolves to
// {status, headers, body (Buffer)}.
function request(method, p, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: apiHost, port: apiPort, method, path: '/2018-06-01' + p, agent, headers: headers || {} },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (body !== undefined) {
      req.setHeader('Content-Length', Buffer.byteLength(body));
      req.end(body);
    } else {
      req.end();
    }
  });
}

// errorObject turns anything thrown or passed to a callback into the
// Lambda error shape {errorType, errorMessage, stackTrace: [strings]}.
function errorObject(err, type) {
  if (err instanceof Error) {
    return {
      errorType: type || err.name || 'Error',
      errorMessage: err.message,
      stackTrace: typeof err.stack === 'string' ? err.stack.split('\n') : [],
    };
  }
  let message;
  try {
    message = typeof err === 'string' ? err : JSON.stringify(err);
  } catch (_) {
    message = String(err);
  }
  return { errorType: type || typeof err, errorMessage: message === undefined ? String(err) : message, stackTrace: [] };
}

// logError writes an invocation's error to the function's log with the
// frames of its stack, as Lambda's runtime does: an async invocation's
// log is where its user looks.
function logError(errObj) {
  const frames = errObj.stackTrace.filter((l) => /^\s+at /.test(l));
  console.error([`Invoke Error ${errObj.errorType}: ${errObj.errorMessage}`, ...frames].join('\n'));
}

function stringify(v) {
  try {
    return JSON.stringify(v);
  } catch (_) {
    return JSON.stringify(String(v));
  }
}

async function postError(p, errObj) {
  const res = await request('POST', p, stringify(errObj), {
    'Content-Type': 'application/json',
    'Lambda-Runtime-Function-Error-Type': errObj.errorType,
  });
  if (res.status !== 202) {
    console.error(`aloft bootstrap: POST ${p}: status ${res.status}: ${res.body}`);
  }
}

async function initFailed(errObj) {
  console.error(JSON.stringify(errObj));
  try {
    await postError('/runtime/init/error', errObj);
  } finally {
    process.exit(1);
  }
}

// HandlerError marks a load failure with the runtime's error type.
class HandlerError extends Error {
  constructor(type, message) {
    super(message);
    this.name = type;
  }
}

function isESMPackage(dir) {
  for (let d = dir; ; d = path.dirname(d)) {
    const pj = path.join(d, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module';
      } catch (_) {
        return false;
      }
    }
    if (d === path.dirname(d) || d === path.dirname(taskRoot)) return false;
  }
}

async function importFile(file) {
  return import(pathToFileURL(file).href);
}

// loadModule finds the handler's module the way Lambda does: .js, .mjs,
// .cjs, then anything require can resolve (a directory's index.js).
async function loadModule(dir, name) {
  const base = path.resolve(taskRoot, dir, name);
  const exists = (f) => fs.existsSync(f) && fs.statSync(f).isFile();
  if (exists(base + '.js')) {
    if (isESMPackage(path.dirname(base))) return importFile(base + '.js');
    try {
      return require(base + '.js');
    } catch (err) {
      if (err && err.code === 'ERR_REQUIRE_ESM') return importFile(base + '.js');
      throw err;
    }
  }
  if (exists(base + '.mjs')) return importFile(base + '.mjs');
  if (exists(base + '.cjs')) return require(base + '.cjs');
  let resolved;
  try {
    resolved = require.resolve(base);
  } catch (_) {
    throw new HandlerError('Runtime.ImportModuleError', `Error: Cannot find module '${name}'`);
  }
  return require(resolved);
}

async function loadHandler() {
  const spec = env._HANDLER || '';
  const dir = path.dirname(spec);
  const baseName = path.basename(spec);
  const dot = baseName.indexOf('.');
  if (dot <= 0 || dot === baseName.length - 1) {
    throw new HandlerError('Runtime.MalformedHandlerName', `Bad handler ${spec}: use file.function`);
  }
  const moduleName = baseName.slice(0, dot);
  const fnPath = baseName.slice(dot + 1);
  let mod;
  try {
    mod = await loadModule(dir, moduleName);
  } catch (err) {
    if (err instanceof HandlerError) throw err;
    if (err instanceof SyntaxError) {
      throw Object.assign(new HandlerError('Runtime.UserCodeSyntaxError', `${err.name}: ${err.message}`), { stack: err.stack });
    }
    if (err && err.code === 'MODULE_NOT_FOUND') {
      throw Object.assign(new HandlerError('Runtime.ImportModuleError', `Error: ${err.message}`), { stack: err.stack });
    }
    throw err;
  }
  let fn = mod;
  for (const part of fnPath.split('.')) {
    fn = fn == null ? undefined : fn[part];
  }
  // An ES module imported from CommonJS exposes module.exports as default.
  if (fn === undefined && mod && mod.default && typeof mod.default === 'object') {
    fn = mod.default;
    for (const part of fnPath.split('.')) fn = fn == null ? undefined : fn[part];
  }
  if (fn === undefined) {
    throw new HandlerError('Runtime.HandlerNotFound', `${moduleName}.${fnPath} is undefined or not exported`);
  }
  if (typeof fn !== 'function') {
    throw new HandlerError('Runtime.HandlerNotFound', `${moduleName}.${fnPath} is not a function`);
  }
  return fn;
}

function parseJSONHeader(v) {
  if (!v) return undefined;
  try {
    return JSON.parse(v);
  } catch (_) {
    return undefined;
  }
}

// current is the invocation in progress: {id, settle(outcome)}.
let current = null;
// waitingForEmptyLoop holds a completion deferred until the event loop is
// empty (callback style with callbackWaitsForEmptyEventLoop).
let waitingForEmptyLoop = null;

process.on('beforeExit', () => {
  if (waitingForEmptyLoop) {
    const done = waitingForEmptyLoop;
    waitingForEmptyLoop = null;
    done();
  } else if (current) {
    // The handler neither returned a promise nor called back, and nothing
    // is left to run: Lambda answers null.
    current.settle({ ok: null });
  }
});

function fatal(err) {
  const errObj = errorObject(err);
  console.error(JSON.stringify(errObj));
  if (current) {
    const id = current.id;
    current = null;
    postError(`/runtime/invocation/${id}/error`, errObj).finally(() => process.exit(1));
  } else if (!initialized) {
    initFailed(errObj);
  } else {
    process.exit(1);
  }
}
process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);

// runHandler calls handler and resolves with {ok: value} or {err: error}
// from whichever comes first: the returned promise, the callback, or
// context.succeed/fail/done.
function runHandler(handler, event, context, id) {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (outcome) => {
      if (settled) return;
      settled = true;
      if (current && current.id === id) current = null;
      resolve(outcome);
    };
    current = { id, settle };
    const callback = (err, value) => {
      const outcome = err !== undefined && err !== null ? { err } : { ok: value };
      if (context.callbackWaitsForEmptyEventLoop) {
        if (!settled && !waitingForEmptyLoop) waitingForEmptyLoop = () => settle(outcome);
      } else {
        settle(outcome);
      }
    };
    context.succeed = (value) => settle({ ok: value });
    context.fail = (err) => settle({ err: err === undefined || err === null ? 'handled' : err });
    context.done = (err, value) => settle(err !== undefined && err !== null ? { err } : { ok: value });
    let ret;
    try {
      ret = handler(event, context, callback);
    } catch (err) {
      settle({ err });
      return;
    }
    if (ret && typeof ret.then === 'function') {
      ret.then((value) => settle({ ok: value }), (err) => settle({ err: err === undefined ? 'undefined' : err }));
    }
  });
}

// runStreaming calls a streamifyResponse handler with a writable stream
// whose chunks go to the Runtime API as they come, in a chunked POST with
// Lambda-Runtime-Function-Response-Mode: streaming. A failure after the
// stream started is sent in the error trailers. Resolves to the POST status.
function runStreaming(handler, event, context, id) {
  const req = http.request({
    host: apiHost, port: apiPort, method: 'POST', agent,
    path: `/2018-06-01/runtime/invocation/${id}/response`,
    headers: {
      'Lambda-Runtime-Function-Response-Mode': 'streaming',
      'Transfer-Encoding': 'chunked',
      Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
    },
  });
  const posted = new Promise((resolve, reject) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
  });
  let contentType = 'application/octet-stream';
  const start = () => {
    if (!req.headersSent && !req.getHeader('Content-Type')) req.setHeader('Content-Type', contentType);
  };
  const stream = new Writable({
    write(chunk, encoding, cb) {
      start();
      req.write(chunk, cb);
    },
  });
  stream.setContentType = (t) => { contentType = t; };
  const finished = new Promise((resolve) => stream.on('finish', resolve));
  let ended = false;
  const end = (err) => {
    if (ended) return;
    ended = true;
    start();
    if (err !== undefined) {
      const errObj = errorObject(err);
      logError(errObj);
      req.addTrailers({
        'Lambda-Runtime-Function-Error-Type': errObj.errorType,
        'Lambda-Runtime-Function-Error-Body': Buffer.from(stringify(errObj)).toString('base64'),
      });
    }
    req.end();
  };
  current = { id, settle: () => end() };
  let ret;
  try {
    ret = Promise.resolve(handler(event, stream, context));
  } catch (err) {
    ret = Promise.reject(err);
  }
  // The response is complete when the handler has ended the stream and its
  // promise has resolved; a rejection ends it with the error trailers.
  return Promise.all([ret, Promise.race([finished, ret.then(() => stream.end())])]).then(
    () => finished.then(() => end()),
    (err) => end(err === undefined ? 'undefined' : err),
  ).then(() => {
    current = null;
    return posted;
  });
}

function makeContext(h, deadline) {
  return {
    callbackWaitsForEmptyEventLoop: true,
    awsRequestId: h['lambda-runtime-aws-request-id'],
    invokedFunctionArn: h['lambda-runtime-invoked-function-arn'],
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJSONHeader(h['lambda-runtime-client-context']),
    identity: parseJSONHeader(h['lambda-runtime-cognito-identity']),
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
}

let initialized = false;

async function main() {
  let handler;
  try {
    handler = await loadHandler();
  } catch (err) {
    await initFailed(errorObject(err));
    return;
  }
  initialized = true;
  for (;;) {
    const next = await request('GET', '/runtime/invocation/next');
    if (next.status !== 200) {
      console.error(`aloft bootstrap: GET next: status ${next.status}: ${next.body}`);
      process.exit(1);
    }
    const h = next.headers;
    const id = h['lambda-runtime-aws-request-id'];
    if (h['lambda-runtime-trace-id']) {
      env._X_AMZN_TRACE_ID = h['lambda-runtime-trace-id'];
    } else {
      delete env._X_AMZN_TRACE_ID;
    }
    let event;
    try {
      event = next.body.length ? JSON.parse(next.body.toString('utf8')) : null;
    } catch (err) {
      const errObj = errorObject(err, 'Runtime.UnmarshalError');
      logError(errObj);
      await postError(`/runtime/invocation/${id}/error`, errObj);
      continue;
    }
    const context = makeContext(h, Number(h['lambda-runtime-deadline-ms']));
    if (handler[streaming]) {
      const status = await runStreaming(handler, event, context, id);
      if (status !== 202) console.error(`aloft bootstrap: POST streamed response: status ${status}`);
      continue;
    }
    const outcome = await runHandler(handler, event, context, id);
    if ('err' in outcome) {
      const errObj = errorObject(outcome.err);
      logError(errObj);
      await postError(`/runtime/invocation/${id}/error`, errObj);
      continue;
    }
    let body;
    try {
      body = JSON.stringify(outcome.ok === undefined ? null : outcome.ok);
    } catch (err) {
      const errObj = errorObject(err, 'Runtime.MarshalError');
      logError(errObj);
      await postError(`/runtime/invocation/${id}/error`, errObj);
      continue;
    }
    const res = await request('POST', `/runtime/invocation/${id}/response`, body, { 'Content-Type': 'application/json' });
    if (res.status !== 202) {
      console.error(`aloft bootstrap: POST response: status ${res.status}: ${res.body}`);
      if (res.status === 413) process.exit(1);
    }
  }
}

main().catch(fatal);
