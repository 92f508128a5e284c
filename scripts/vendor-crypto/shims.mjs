// Stands in, inside the bundle only, for Object.hasOwn (ES2022), which the noble libraries call
// and which older QuickJS builds (the local runtime's 2021 engine) lack. Same semantics; no global
// is modified. build.mjs maps `Object.hasOwn` to this through esbuild's define + inject.
export const kitHasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
