exports.handler = async (event) => ({ nested: true, event });
