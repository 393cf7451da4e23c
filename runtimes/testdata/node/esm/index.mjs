const loadedAt = await Promise.resolve('top-level await');
export const handler = async (event) => ({ esm: 'mjs', loadedAt, event });
