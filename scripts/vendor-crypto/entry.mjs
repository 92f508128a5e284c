// The one file's entry point: exactly what the agent contract needs from the noble libraries,
// exposed as the global `KitCrypto`. Bundled by build.mjs; never loaded by Node.js at run time.
//
// secp256k1 is assembled here from noble's audited building blocks (weierstrass + ecdsa) instead
// of importing '@noble/curves/secp256k1.js', because that module's curve probes
// crypto.getRandomValues when it loads and blinds every signature with it. Here the randomness
// source is one that always throws: noble's documented fallback then takes its constant-time
// paths (unblinded ladder, Fermat inversion), signing stays RFC 6979 deterministic, and the
// contract never touches crypto.getRandomValues. build.mjs checks the constants and signatures
// against noble's own secp256k1 before writing the file.
import { ecdsa, weierstrass } from "@noble/curves/abstract/weierstrass.js";
import { Field } from "@noble/curves/abstract/modular.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { hmac } from "@noble/hashes/hmac.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";

function noRandomness() {
  throw new Error("no randomness in the agent contract");
}

// SEC 2 v2, section 2.4.1 (the values @noble/curves/secp256k1.js uses).
const CURVE = {
  p: BigInt("0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f"),
  n: BigInt("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"),
  h: BigInt(1),
  a: BigInt(0),
  b: BigInt(7),
  Gx: BigInt("0x79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
  Gy: BigInt("0x483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"),
};
const ENDO = {
  beta: BigInt("0x7ae96a2b657c07106e64479eac3434e99cf0497512f58995c1396c28719501ee"),
  basises: [
    [BigInt("0x3086d221a7d46bcde86c90e49284eb15"), -BigInt("0xe4437ed6010e88286f547fa90abfe4c3")],
    [BigInt("0x114ca50f7a8e2f3f657c1108d9d44cfd8"), BigInt("0x3086d221a7d46bcde86c90e49284eb15")],
  ],
};

const Point = weierstrass(CURVE, { Fp: Field(CURVE.p), endo: ENDO, randomBytes: noRandomness });
// One or two multiplications per run (a fresh context each time): building the default cached
// table for G would cost more than it saves, so G uses noble's table-less constant-time path.
Point.BASE.precompute(1);
const secp256k1 = ecdsa(Point, sha256, { randomBytes: noRandomness });

// AES-256-GCM (for request encryption): noble builds its AES tables when the module loads, which
// takes longer than all the rest of this file together, so the module is loaded on first use.
function gcm(key, nonce, aad) {
  return require("./aes-gcm.mjs").gcm(key, nonce, aad);
}

export { secp256k1, sha256, keccak_256, hmac, hkdf, gcm, bytesToHex, hexToBytes, concatBytes, utf8ToBytes };
