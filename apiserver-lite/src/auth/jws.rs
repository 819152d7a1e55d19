//! Service-account tokens as signed JWTs (upstream's `pkg/serviceaccount/jwt.go`): compact JWS
//! with ES256 (the generated P-256 key) or RS256 (a given RSA key), `kid` the base64url SHA-256
//! of the public key's SubjectPublicKeyInfo as upstream computes it, and the JWKS that the
//! issuer discovery endpoint (`/openid/v1/jwks`) publishes.
//!
//! A small JWS on `ring` rather than a JWT crate: ring is already linked (rustls), the two
//! algorithms are a few lines each, and the claims checks are Kubernetes-specific anyway.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde_json::{json, Value};

/// Failures to load keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("service account key: {0}")]
    Invalid(String),
}

enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A public key that verifies tokens.
struct VerifyKey {
    kid: String,
    alg: &'static str,
    /// The EC point (uncompressed) or the PKCS#1 RSA public key.
    raw: Vec<u8>,
    jwk: Value,
}

/// Signs and verifies service-account JWTs.
pub struct JwtKeys {
    signer: Option<(Signer, String)>,
    keys: Vec<VerifyKey>,
    rng: SystemRandom,
}

impl JwtKeys {
    /// From the signing key (PKCS#8 PEM, EC P-256 or RSA; empty = verify only) and extra
    /// verification keys (PEM public keys or certificates).
    pub fn new(signing_pem: &str, public_pems: &[String]) -> Result<JwtKeys, KeyError> {
        let rng = SystemRandom::new();
        let mut keys = Vec::new();
        let mut signer = None;
        if !signing_pem.trim().is_empty() {
            let der = PrivateKeyDer::from_pem_slice(signing_pem.as_bytes())
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
            let s = match &der {
                PrivateKeyDer::Pkcs8(p) => {
                    match EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        p.secret_pkcs8_der(),
                        &rng,
                    ) {
                        Ok(k) => Signer::Es256(k),
                        Err(_) => Signer::Rs256(
                            RsaKeyPair::from_pkcs8(p.secret_pkcs8_der())
                                .map_err(|e| KeyError::Invalid(e.to_string()))?,
                        ),
                    }
                }
                PrivateKeyDer::Pkcs1(p) => Signer::Rs256(
                    RsaKeyPair::from_der(p.secret_pkcs1_der())
                        .map_err(|e| KeyError::Invalid(e.to_string()))?,
                ),
                _ => {
                    return Err(KeyError::Invalid(
                        "only PKCS#8 EC P-256 and RSA keys are supported".into(),
                    ))
                }
            };
            let spki = rcgen::KeyPair::from_pem(signing_pem)
                .map(|k| rcgen::PublicKeyData::subject_public_key_info(&k))
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
            let vk = verify_key(&spki)?;
            signer = Some((s, vk.kid.clone()));
            keys.push(vk);
        }
        for pem in public_pems {
            if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
                keys.push(verify_key(spki.as_ref())?);
            } else if let Ok(cert) = CertificateDer::from_pem_slice(pem.as_bytes()) {
                let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                keys.push(verify_key(x.public_key().raw)?);
            } else {
                return Err(KeyError::Invalid(
                    "no public key or certificate in the file".into(),
                ));
            }
        }
        Ok(JwtKeys { signer, keys, rng })
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        let (signer, kid) = self
            .signer
            .as_ref()
            .ok_or_else(|| KeyError::Invalid("no signing key".into()))?;
        let alg = match signer {
            Signer::Es256(_) => "ES256",
            Signer::Rs256(_) => "RS256",
        };
        let header = json!({"alg": alg, "kid": kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = match signer {
            Signer::Es256(k) => k
                .sign(&self.rng, input.as_bytes())
                .map_err(|_| KeyError::Invalid("signing failed".into()))?
                .as_ref()
                .to_vec(),
            Signer::Rs256(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| KeyError::Invalid("signing failed".into()))?;
                sig
            }
        };
        Ok(format!("{input}.{}", B64.encode(sig)))
    }

    /// Checks the signature of a compact JWS against the known keys; returns the claims.
    /// `None` when it is not a JWT at all (another authenticator may know the token).
    pub fn verify(&self, token: &str) -> Option<Result<Value, &'static str>> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        let claims: Value = match B64
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(v) => v,
            None => return Some(Err("malformed token")),
        };
        let Ok(sig) = B64.decode(s) else {
            return Some(Err("malformed token"));
        };
        let alg = header["alg"].as_str().unwrap_or("");
        let kid = header["kid"].as_str();
        let input = &token[..h.len() + 1 + c.len()];
        let ok = self
            .keys
            .iter()
            .filter(|k| k.alg == alg && kid.is_none_or(|kid| kid == k.kid))
            .any(|k| {
                let alg: &dyn signature::VerificationAlgorithm = match k.alg {
                    "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                UnparsedPublicKey::new(alg, &k.raw)
                    .verify(input.as_bytes(), &sig)
                    .is_ok()
            });
        Some(if ok {
            Ok(claims)
        } else {
            Err("invalid signature")
        })
    }

    /// The JSON Web Key Set of the verification keys.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }
}

fn verify_key(spki: &[u8]) -> Result<VerifyKey, KeyError> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
    let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, spki));
    let raw = info.subject_public_key.data.to_vec();
    match info.parsed() {
        Ok(PublicKey::EC(point)) => {
            let p = point.data();
            if p.len() != 65 || p[0] != 4 {
                return Err(KeyError::Invalid("only P-256 EC keys are supported".into()));
            }
            Ok(VerifyKey {
                jwk: json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                    "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])}),
                kid,
                alg: "ES256",
                raw,
            })
        }
        Ok(PublicKey::RSA(k)) => Ok(VerifyKey {
            jwk: json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                "n": B64.encode(trim_zero(k.modulus)), "e": B64.encode(trim_zero(k.exponent))}),
            kid,
            alg: "RS256",
            raw,
        }),
        _ => Err(KeyError::Invalid("unsupported public key type".into())),
    }
}

fn trim_zero(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|x| **x == 0).count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_rejects_other_keys() {
        let a = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let b = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let ka = JwtKeys::new(&a, &[]).unwrap();
        let kb = JwtKeys::new(&b, &[]).unwrap();
        let t = ka.sign(&json!({"sub": "x"})).unwrap();
        assert_eq!(ka.verify(&t).unwrap().unwrap()["sub"], "x");
        assert_eq!(kb.verify(&t).unwrap(), Err("invalid signature"));
        // A changed payload fails.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(json!({"sub": "admin"}).to_string());
        parts[1] = &forged;
        assert_eq!(
            ka.verify(&parts.join(".")).unwrap(),
            Err("invalid signature")
        );
        assert!(ka.verify("not-a-jwt").is_none());
        assert_eq!(ka.jwks()["keys"][0]["kty"], "EC");
    }
}
