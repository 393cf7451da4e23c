// An unmodified AWS Lambda Node.js handler.
exports.handler = async (event, context) => {
  if (event && event.rawPath !== undefined) {
    const name = (event.queryStringParameters && event.queryStringParameters.name) || "world";
    console.log(`greeting ${name}`);
    return {
      statusCode: 200,
      headers: { "content-type": "text/plain" },
      body: `Hello, ${name}! (from Node ${process.version}, request ${context.awsRequestId})\n`,
    };
  }
  return { echo: event, function: context.functionName, remainingMs: context.getRemainingTimeInMillis() };
};
