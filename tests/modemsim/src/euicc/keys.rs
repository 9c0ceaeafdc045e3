//! The card's P-256 keys: generated on the simulated card and used only through signing, the
//! way a secure element holds them.

use p256::ecdsa::{
    Signature, SigningKey, VerifyingKey,
    signature::{
        Signer as _, Verifier as _,
        hazmat::{PrehashSigner as _, PrehashVerifier as _},
    },
};
use rand_core::{OsRng, RngCore as _};

/// An uncompressed SEC1 point, `04 ‖ X ‖ Y`, as every applet reports public keys.
pub type Point = [u8; 65];

/// A private key on the card and its public point.
pub struct CardKey {
    secret: SigningKey,
    public: Point,
}

impl CardKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::random(&mut OsRng))
    }

    /// The key the card's non-volatile memory (the `--card-state` file) kept.
    pub fn from_scalar(scalar: &[u8; 32]) -> Option<Self> {
        SigningKey::from_slice(scalar).ok().map(Self::from_signing_key)
    }

    fn from_signing_key(secret: SigningKey) -> Self {
        let encoded = secret.verifying_key().to_encoded_point(false);
        let mut public = [0; 65];
        public.copy_from_slice(encoded.as_bytes());
        Self { secret, public }
    }

    /// The private scalar, only for writing the card's own state file.
    pub fn scalar(&self) -> [u8; 32] {
        self.secret.to_bytes().into()
    }

    pub fn public(&self) -> Point {
        self.public
    }

    /// ECDSA over SHA-256 of `message`, raw r‖s.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let signature: Signature = self.secret.sign(message);
        signature.to_bytes().into()
    }

    /// ECDSA over a hash computed outside the card, raw r‖s; `None` for a digest ECDSA refuses.
    pub fn sign_prehash(&self, digest: &[u8]) -> Option<[u8; 64]> {
        let signature: Signature = self.secret.sign_prehash(digest).ok()?;
        Some(signature.to_bytes().into())
    }
}

impl rcgen::PublicKeyData for CardKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CardKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // X.509's ecdsa-with-SHA256 carries the signature as DER.
        let signature: Signature = self.secret.sign(message);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// Whether `signature` (raw r‖s) is `public`'s ECDSA signature over SHA-256 of `message`.
pub fn verify(public: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|signature| public.verify(message, &signature).is_ok())
}

/// Whether `signature` (raw r‖s) is the key at `point`'s ECDSA signature over `digest`.
pub fn verify_prehash(point: &Point, digest: &[u8], signature: &[u8]) -> bool {
    let Ok(public) = VerifyingKey::from_sec1_bytes(point) else {
        return false;
    };
    Signature::from_slice(signature).is_ok_and(|signature| public.verify_prehash(digest, &signature).is_ok())
}

/// `len` bytes from the operating system's random source.
pub fn random(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    OsRng.fill_bytes(&mut out);
    out
}
