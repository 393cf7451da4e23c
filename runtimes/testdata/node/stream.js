// Response-streaming handlers (awslambda.streamifyResponse).
'use strict';

exports.chunks = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType('text/plain');
  responseStream.write('one,');
  await new Promise((resolve) => setTimeout(resolve, 1));
  responseStream.write('two');
  responseStream.end();
});

exports.http = awslambda.streamifyResponse(async (event, responseStream) => {
  const s = awslambda.HttpResponseStream.from(responseStream, { statusCode: 201, headers: { 'x-a': 'b' } });
  s.write('body');
  s.end();
});

exports.failMidway = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write('partial');
  await new Promise((resolve) => setTimeout(resolve, 1));
  throw new Error('stream broke');
});
