export async function handler(event) {
  return { esm: 'package type module', event };
}
