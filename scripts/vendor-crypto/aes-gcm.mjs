// Only AES-GCM from @noble/ciphers, loaded lazily by entry.mjs (see there).
export { gcm } from "@noble/ciphers/aes.js";
