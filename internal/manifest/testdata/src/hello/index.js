exports.handler = async (e) => e;
