//! Message encryption for Web Push (RFC 8291 over RFC 8188 `aes128gcm`),
//! one record: a fresh P-256 key pair and salt per message, ECDH with the
//! subscription's `p256dh`, HKDF-SHA-256 keyed by its `auth` secret,
//! AES-128-GCM.
//!
//! Hand-written because the maintained crates do not fit: `ece` and
//! `web-push` need OpenSSL, `web-push-native` brings a second JWT stack. The
//! derivation is split from the key agreement so the RFC's Appendix A
//! vector is checked byte for byte (`tests`), and the whole is checked
//! against independent decrypters (Python `http_ece`/`cryptography`, the
//! mock's own RustCrypto decrypter) in `tests/`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::PublicKey;
use rand::RngCore;
use sha2::Sha256;

/// The record size written in the header (push services guarantee 4096
/// bytes of body, so one record is all there is).
pub const RECORD_SIZE: u32 = 4096;
/// Header: salt (16) + rs (4) + idlen (1) + the sender's public key (65).
pub const HEADER_BYTES: usize = 86;
/// The largest plaintext that fits one 4096-byte message: 4096 − header −
/// the padding delimiter − the GCM tag.
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_BYTES - 1 - 16;

/// Why a message could not be encrypted.
#[derive(Debug, PartialEq, Eq)]
pub enum EceError {
    /// The subscription's `p256dh` is not a point on P-256.
    BadReceiverKey,
    /// More than [`MAX_PLAINTEXT`] bytes.
    TooLarge(usize),
}

/// Encrypt `plaintext` to the subscription (`p256dh`, `auth`): the whole
/// `aes128gcm` body.
pub fn encrypt(p256dh: &[u8; 65], auth: &[u8; 16], plaintext: &[u8]) -> Result<Vec<u8>, EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge(plaintext.len()));
    }
    let receiver = PublicKey::from_sec1_bytes(p256dh).map_err(|_| EceError::BadReceiverKey)?;
    let ephemeral = p256::ecdh::EphemeralSecret::random(&mut rand::rngs::OsRng);
    let sender: [u8; 65] = ephemeral.public_key().to_encoded_point(false).as_bytes().try_into().expect("an uncompressed P-256 point is 65 bytes");
    let shared = ephemeral.diffie_hellman(&receiver);
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    Ok(seal(shared.raw_secret_bytes().as_slice(), p256dh, &sender, auth, &salt, plaintext))
}

/// RFC 8291 §3.3–3.4 and RFC 8188 §2 from the ECDH secret on: the
/// deterministic half of [`encrypt`].
pub fn seal(ecdh_secret: &[u8], receiver: &[u8; 65], sender: &[u8; 65], auth: &[u8; 16], salt: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    // IKM = HKDF(salt = auth, ikm = ecdh, info = "WebPush: info" 0 ua as, 32)
    let mut key_info = Vec::with_capacity(14 + 130);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(receiver);
    key_info.extend_from_slice(sender);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh_secret).expand(&key_info, &mut ikm).expect("32 bytes is a valid HKDF length");
    // CEK and nonce from HKDF(salt, IKM).
    let hk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    hk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).expect("16 bytes is a valid HKDF length");
    hk.expand(b"Content-Encoding: nonce\0", &mut nonce).expect("12 bytes is a valid HKDF length");
    // One record, the last: plaintext then the 0x02 delimiter, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2);
    let sealed = Aes128Gcm::new(&cek.into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &record, aad: b"" })
        .expect("AES-GCM encrypts any record under 64 GiB");
    let mut body = Vec::with_capacity(HEADER_BYTES + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(sender);
    body.extend_from_slice(&sealed);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;

    fn b(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A, byte for byte.
    #[test]
    fn the_rfc_8291_example_encrypts_to_the_rfc_body() {
        let receiver: [u8; 65] = b("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4").try_into().unwrap();
        let sender: [u8; 65] = b("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8").try_into().unwrap();
        let auth: [u8; 16] = b("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let salt: [u8; 16] = b("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        // The ECDH secret the RFC derives from its sender's private key:
        let sender_private = p256::SecretKey::from_slice(&b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let shared = p256::ecdh::diffie_hellman(sender_private.to_nonzero_scalar(), PublicKey::from_sec1_bytes(&receiver).unwrap().as_affine());
        assert_eq!(B64.encode(shared.raw_secret_bytes()), "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs");
        let body = seal(shared.raw_secret_bytes().as_slice(), &receiver, &sender, &auth, &salt, b"When I grow up, I want to be a watermelon");
        assert_eq!(
            B64.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn each_message_has_its_own_key_and_salt_and_the_size_is_bounded() {
        let receiver_secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let receiver: [u8; 65] = receiver_secret.public_key().to_encoded_point(false).as_bytes().try_into().unwrap();
        let (a, c) = (encrypt(&receiver, &[7; 16], b"x").unwrap(), encrypt(&receiver, &[7; 16], b"x").unwrap());
        assert_eq!(a.len(), HEADER_BYTES + 1 + 1 + 16);
        assert_ne!(a[..16], c[..16], "salt");
        assert_ne!(a[21..86], c[21..86], "sender key");
        assert!(encrypt(&receiver, &[7; 16], &[0; MAX_PLAINTEXT]).unwrap().len() == 4096);
        assert_eq!(encrypt(&receiver, &[7; 16], &[0; MAX_PLAINTEXT + 1]), Err(EceError::TooLarge(MAX_PLAINTEXT + 1)));
        let mut off_curve = receiver;
        off_curve[64] ^= 1;
        assert_eq!(encrypt(&off_curve, &[7; 16], b"x"), Err(EceError::BadReceiverKey));
    }
}
