// The AES bundle's entry point: AES-GCM from @noble/ciphers, exposed as the global `KitAes`.
// A bundle of its own (vendor/noble-aes.js) because only sealed requests use it: the contract
// compiles it on first sealing use, and noble builds its AES tables when it loads.
export { gcm } from "@noble/ciphers/aes.js";
