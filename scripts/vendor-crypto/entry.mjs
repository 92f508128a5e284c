// The signing bundle's entry point: what the agent contract needs from the noble libraries except
// AES-GCM (aes-gcm.mjs, a second bundle), exposed as the global `KitCrypto`. Bundled by build.mjs;
// never loaded by Node.js at run time.
//
// secp256k1 is assembled here from noble's audited building blocks (weierstrass + ecdsa) instead
// of importing '@noble/curves/secp256k1.js', because that module's curve probes
// crypto.getRandomValues when it loads and blinds every signature with it. Here the randomness
// source is one that always throws: noble's documented fallback then takes its constant-time
// paths (unblinded constant-time multiplication, Fermat inversion), signing stays RFC 6979
// deterministic, and the contract never touches crypto.getRandomValues. build.mjs checks the
// constants and signatures against noble's own secp256k1 before writing the file.
import { ecdsa, weierstrass } from "@noble/curves/abstract/weierstrass.js";
import { Field } from "@noble/curves/abstract/modular.js";
import { ScalarMultiplier } from "@noble/curves/abstract/curve.js";
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
const secp256k1 = ecdsa(Point, sha256, { randomBytes: noRandomness });

// Fixed-base multiplication (getPublicKey, sign) with a table compiled into this file, as
// libsecp256k1 compiles in its ecmult_gen table. A contract makes one or two multiplications per
// run in a fresh context, where building noble's G table costs more than it saves and the
// table-less constant-time ladder costs ~256 doublings. build.mjs computes the table with noble's
// own ScalarMultiplier.buildWnafTable(G, KIT_G_W, 256) + normalizeZ, writes it as one hex string
// (affine x || y, 64 hex digits each, window by window) and checks it against noble before
// writing. Points are made from it on first use, and noble's constant-time wnafCachedCT then runs
// on it unchanged: the only hook is the table lookup below, for G at this window size only.
const G_TABLE_BITS = 256;
let gTable = null;
function gPrecomputes() {
  if (gTable === null) {
    const hex = KIT_G_TABLE, comp = [], one = BigInt(1);
    for (let i = 0; i < hex.length; i += 128) {
      const x = BigInt("0x" + hex.slice(i, i + 64)), y = BigInt("0x" + hex.slice(i + 64, i + 128));
      comp.push(new Point(x, y, one));
    }
    const windows = Math.ceil(G_TABLE_BITS / KIT_G_W) + 1;
    if (comp.length !== windows * 2 ** (KIT_G_W - 1) || !comp[0].equals(Point.BASE)) {
      throw new Error("invalid G table");
    }
    gTable = { W: KIT_G_W, bits: G_TABLE_BITS, windows, comp };
  }
  return gTable;
}
const getWnafPrecomputes = ScalarMultiplier.prototype.getWnafPrecomputes;
ScalarMultiplier.prototype.getWnafPrecomputes = function (W, point, bits, transform) {
  if (point === Point.BASE && W === KIT_G_W && bits === G_TABLE_BITS) return gPrecomputes();
  return getWnafPrecomputes.call(this, W, point, bits, transform);
};
Point.BASE.precompute(KIT_G_W);

export { secp256k1, sha256, keccak_256, hmac, hkdf, bytesToHex, hexToBytes, concatBytes, utf8ToBytes };
