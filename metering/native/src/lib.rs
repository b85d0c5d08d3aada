//! Ed25519 for the royalty engine, behind a C ABI loaded with ctypes (`metering/ed25519.py`).
//!
//! The stream join verifies one signature per usage event, almost always under one or a few
//! metering-node keys. Batch verification (one multi-scalar multiplication for many
//! signatures) costs a fraction of verifying them one by one, so `royalty_ed25519_verify_batch`
//! checks a whole slice at once, and only when the batch fails verifies each signature alone to
//! say which ones are bad.
//!
//! # The rule
//!
//! A signature `(R, S)` of message `M` under public key `A` is valid when:
//!
//! 1. `A` and `R` are canonical encodings (`y < p`) of curve points, neither of small order;
//! 2. `S` is canonical (below the group order `L`);
//! 3. `[8]([S]B - R - [k]A)` is the identity, with `k = SHA-512(R || A || M) mod L`: the
//!    cofactored equation of RFC 8032, section 5.1.7.
//!
//! The batch and the single check apply this same rule, so a signature gets the same verdict
//! whichever batch it is verified in. (With the cofactorless equation, `[S]B = R + [k]A`, that
//! cannot hold: a batch misses a small-order part of `R` for some weights and not others.)
//!
//! libsodium's `crypto_sign_verify_detached` applies checks 1 and 2 and the cofactorless
//! equation. The two rules differ only for an `R` that is the sum of a proper point and a
//! small-order one, which nobody but the holder of the signing key can make valid: for every
//! signature a third party can produce, both give the same verdict.
//!
//! A batch accepts when every signature passes checks 1 and 2 and the weighted sum
//! `[8](sum z_i ([S_i]B - R_i - [k_i]A_i))` is the identity, with 128-bit weights `z_i` derived
//! from a hash of the whole batch. If a signature fails check 3, the batch passes with
//! probability below 2^-127.
//!
//! The functions return 1 (valid, done) or 0 (invalid), and a negative number for arguments
//! they refuse; `royalty_ed25519_verify_batch` returns how many are valid, and
//! `royalty_ed25519_signing_key_new` a pointer (null when refused).

use std::slice;
use std::sync::OnceLock;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha512};

const KEY: usize = 32;
const SIG: usize = 64;

/// True when the 255-bit `y` of an encoding is `p = 2^255 - 19` or more.
fn non_canonical(encoding: &[u8; 32]) -> bool {
    encoding[0] >= 0xed && encoding[1..31].iter().all(|b| *b == 0xff) && encoding[31] & 0x7f == 0x7f
}

/// The encodings of the small-order points with the sign bit cleared (libsodium's
/// `ge25519_has_small_order` list, less the non-canonical ones refused before).
fn small_order_encodings() -> &'static Vec<[u8; 32]> {
    static LIST: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut list: Vec<[u8; 32]> = Vec::new();
        for point in EIGHT_TORSION.iter() {
            let mut y = point.compress().to_bytes();
            y[31] &= 0x7f;
            if !list.contains(&y) {
                list.push(y);
            }
        }
        list
    })
}

/// A public key decoded under check 1.
fn public_point(encoding: &[u8; KEY]) -> Option<EdwardsPoint> {
    if non_canonical(encoding) {
        return None;
    }
    let point = CompressedEdwardsY(*encoding).decompress()?;
    if point.is_small_order() {
        return None;
    }
    Some(point)
}

/// A signature's parts after checks 1 and 2: `R`, `S`, `k`.
struct Parts {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn parts(key: &[u8; KEY], message: &[u8], signature: &[u8; SIG]) -> Option<Parts> {
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&signature[..32]);
    if non_canonical(&r_bytes) {
        return None;
    }
    let mut masked = r_bytes;
    masked[31] &= 0x7f;
    if small_order_encodings().contains(&masked) {
        return None;
    }
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&signature[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r_bytes)
            .chain_update(key)
            .chain_update(message),
    );
    Some(Parts { r, s, k })
}

/// Check 3 for one signature.
fn equation_holds(a: &EdwardsPoint, p: &Parts) -> bool {
    (EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &-a, &p.s) - p.r)
        .mul_by_cofactor()
        .is_identity()
}

fn verify_one(key: &[u8; KEY], message: &[u8], signature: &[u8; SIG]) -> bool {
    match (public_point(key), parts(key, message, signature)) {
        (Some(a), Some(p)) => equation_holds(&a, &p),
        _ => false,
    }
}

/// The `length` bytes at `data` (none when `length` is 0, whatever `data` is); None for a null
/// pointer to bytes.
///
/// # Safety
/// A non-null `data` points to `length` readable bytes that outlive the slice.
unsafe fn bytes_at<'a>(data: *const u8, length: usize) -> Option<&'a [u8]> {
    if length == 0 {
        Some(&[])
    } else if data.is_null() {
        None
    } else {
        Some(slice::from_raw_parts(data, length))
    }
}

/// # Safety
/// `seed` points to 32 readable bytes, `out` to 32 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn royalty_ed25519_public_key(seed: *const u8, out: *mut u8) -> i32 {
    if seed.is_null() || out.is_null() {
        return -1;
    }
    let seed = &*(seed as *const [u8; KEY]);
    let public = SigningKey::from_bytes(seed).verifying_key().to_bytes();
    slice::from_raw_parts_mut(out, KEY).copy_from_slice(&public);
    1
}

/// An expanded signing key (seed hashed, public key derived once), kept for the process's life
/// (a node signs with one or two keys).
///
/// # Safety
/// `seed` points to 32 readable bytes.
#[no_mangle]
pub unsafe extern "C" fn royalty_ed25519_signing_key_new(seed: *const u8) -> *mut SigningKey {
    if seed.is_null() {
        return std::ptr::null_mut();
    }
    Box::into_raw(Box::new(SigningKey::from_bytes(
        &*(seed as *const [u8; KEY]),
    )))
}

/// # Safety
/// `key` from `royalty_ed25519_signing_key_new`; `message` points to `length` readable bytes;
/// `out` to 64 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn royalty_ed25519_sign(
    key: *const SigningKey,
    message: *const u8,
    length: usize,
    out: *mut u8,
) -> i32 {
    let Some(message) = bytes_at(message, length) else {
        return -1;
    };
    if key.is_null() || out.is_null() {
        return -1;
    }
    let signature = (*key).sign(message).to_bytes();
    slice::from_raw_parts_mut(out, SIG).copy_from_slice(&signature);
    1
}

/// # Safety
/// `key` points to 32 readable bytes, `message` to `length`, `signature` to 64.
#[no_mangle]
pub unsafe extern "C" fn royalty_ed25519_verify(
    key: *const u8,
    message: *const u8,
    length: usize,
    signature: *const u8,
) -> i32 {
    let Some(message) = bytes_at(message, length) else {
        return -1;
    };
    if key.is_null() || signature.is_null() {
        return -1;
    }
    verify_one(
        &*(key as *const [u8; KEY]),
        message,
        &*(signature as *const [u8; SIG]),
    ) as i32
}

/// Verify `count` signatures: key `i` is `keys[32i..32i+32]`, signature `i` is
/// `signatures[64i..64i+64]`, message `i` is `messages[ends[i-1]..ends[i]]` (`ends[-1]` = 0).
/// Writes 1 (valid) or 0 (invalid) to `out[i]`; returns how many are valid, or -1 when the
/// offsets are not increasing.
///
/// # Safety
/// The buffers hold what the sizes above say; `messages` holds `ends[count-1]` bytes.
#[no_mangle]
pub unsafe extern "C" fn royalty_ed25519_verify_batch(
    count: usize,
    keys: *const u8,
    messages: *const u8,
    ends: *const u64,
    signatures: *const u8,
    out: *mut u8,
) -> i64 {
    if count == 0 {
        return 0;
    }
    if keys.is_null() || ends.is_null() || signatures.is_null() || out.is_null() {
        return -1;
    }
    let keys = slice::from_raw_parts(keys, count * KEY);
    let ends = slice::from_raw_parts(ends, count);
    let signatures = slice::from_raw_parts(signatures, count * SIG);
    let out = slice::from_raw_parts_mut(out, count);
    let total = ends[count - 1] as usize;
    let Some(data) = bytes_at(messages, total) else {
        return -1;
    };
    let mut start = 0usize;
    let mut bounds = Vec::with_capacity(count);
    for &end in ends {
        let end = end as usize;
        if end < start || end > total {
            return -1;
        }
        bounds.push((start, end));
        start = end;
    }
    let key_at = |i: usize| -> &[u8; KEY] { keys[i * KEY..(i + 1) * KEY].try_into().unwrap() };
    let sig_at =
        |i: usize| -> &[u8; SIG] { signatures[i * SIG..(i + 1) * SIG].try_into().unwrap() };

    // Checks 1 and 2; each distinct key decoded once (a batch usually carries one or a few).
    let mut decoded: Vec<([u8; KEY], Option<EdwardsPoint>)> = Vec::new();
    let mut members: Vec<(usize, EdwardsPoint, Parts)> = Vec::with_capacity(count);
    for i in 0..count {
        out[i] = 0;
        let key = key_at(i);
        let a = match decoded.iter().find(|(k, _)| k == key) {
            Some((_, a)) => *a,
            None => {
                let a = public_point(key);
                decoded.push((*key, a));
                a
            }
        };
        let Some(a) = a else { continue };
        if let Some(p) = parts(key, &data[bounds[i].0..bounds[i].1], sig_at(i)) {
            members.push((i, a, p));
        }
    }
    if members.is_empty() {
        return 0;
    }

    // Weights from a hash of the whole batch: every k_i (which covers R_i, A_i, M_i) and S_i.
    let mut transcript = Sha512::new();
    transcript.update(b"royalty-ed25519 batch v1");
    for (_, _, p) in &members {
        transcript.update(p.k.as_bytes());
        transcript.update(p.s.as_bytes());
    }
    let seed = transcript.finalize();
    let weights: Vec<Scalar> = (0..members.len() as u64)
        .map(|j| {
            let digest = Sha512::new()
                .chain_update(seed)
                .chain_update(j.to_le_bytes())
                .finalize();
            let mut wide = [0u8; 32];
            wide[..16].copy_from_slice(&digest[..16]);
            Scalar::from_bytes_mod_order(wide)
        })
        .collect();

    let b_coefficient: Scalar = members
        .iter()
        .zip(&weights)
        .map(|((_, _, p), z)| z * p.s)
        .sum();
    let scalars = std::iter::once(-b_coefficient)
        .chain(weights.iter().copied())
        .chain(members.iter().zip(&weights).map(|((_, _, p), z)| z * p.k));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(members.iter().map(|(_, _, p)| p.r))
        .chain(members.iter().map(|(_, a, _)| *a));
    // -(sum z_i S_i) B + sum z_i R_i + sum z_i k_i A_i = -sum z_i ([S_i]B - R_i - [k_i]A_i)
    let sum = EdwardsPoint::vartime_multiscalar_mul(scalars, points);
    if sum.mul_by_cofactor().is_identity() {
        for (i, _, _) in &members {
            out[*i] = 1;
        }
        return members.len() as i64;
    }
    // At least one is bad: say which, one by one.
    let mut valid = 0i64;
    for (i, a, p) in &members {
        if equation_holds(a, p) {
            out[*i] = 1;
            valid += 1;
        }
    }
    valid
}
