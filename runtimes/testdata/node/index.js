// Handlers in every style the Node bootstrap supports; runtimes_test.go
// picks one per process through _HANDLER.
'use strict';

exports.echo = async (event) => event;

exports.fail = async () => {
  throw new TypeError('bad thing');
};

exports.info = async (event, context) => ({
  awsRequestId: context.awsRequestId,
  functionName: context.functionName,
  functionVersion: context.functionVersion,
  invokedFunctionArn: context.invokedFunctionArn,
  memoryLimitInMB: context.memoryLimitInMB,
  logGroupName: context.logGroupName,
  logStreamName: context.logStreamName,
  callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
  remaining: context.getRemainingTimeInMillis(),
  clientContext: context.clientContext,
  identity: context.identity === undefined ? null : context.identity,
  trace: process.env._X_AMZN_TRACE_ID,
});

// callback answers after a timer; with callbackWaitsForEmptyEventLoop the
// answer waits for the second timer too, which sets a field on the result.
exports.callback = (event, context, callback) => {
  const result = { via: 'callback', event, late: false };
  setTimeout(() => {
    callback(null, result);
    setTimeout(() => { result.late = true; }, 5);
  }, 1);
};

exports.callbackNoWait = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  callback(null, 'no wait');
  setTimeout(() => {}, 60000); // would hold the answer for a minute
};

exports.callbackError = (event, context, callback) => {
  callback(new RangeError('out of range'));
};

exports.succeed = (event, context) => { context.succeed({ via: 'succeed' }); };
exports.contextFail = (event, context) => { context.fail(new Error('via fail')); };
exports.done = (event, context) => { context.done(null, 'via done'); };
exports.nothing = () => {};

exports.crash = async () => {
  setImmediate(() => { throw new Error('async crash'); });
  return new Promise(() => {});
};

exports.notfn = 42;
