//! Bearer-token authentication for the query services.
//!
//! Every call to a Patron service needs `authorization: Bearer <token>` with one of the configured
//! tokens. Health checking and reflection are not wrapped: orchestrators probe health without
//! secrets, and reflection only describes the (public) schema.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// A tonic interceptor that admits calls carrying a configured bearer token.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .finish()
    }
}

impl BearerAuth {
    /// Admits any of `tokens` (none admits nobody).
    pub fn new(tokens: &[String]) -> Self {
        Self {
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
        }
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in constant time
    /// for its length, so timing does not reveal which token or how much of it matched.
    fn admits(&self, presented: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for token in self.tokens.iter() {
            found |= token.as_slice().ct_eq(presented);
        }
        found.into()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let presented = header
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be Bearer <token>"))?;
        if self.admits(presented) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &mut BearerAuth, header: Option<&'static str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        auth.call(request).map(drop).map_err(|status| status.code())
    }

    #[test]
    fn only_configured_tokens_pass() {
        let mut auth = BearerAuth::new(&["alpha".into(), "beta-2".into()]);
        assert_eq!(call(&mut auth, Some("Bearer alpha")), Ok(()));
        assert_eq!(call(&mut auth, Some("Bearer beta-2")), Ok(()));
        for wrong in [
            None,
            Some("Bearer alph"),
            Some("Bearer "),
            Some("alpha"),
            Some("Basic alpha"),
        ] {
            assert_eq!(
                call(&mut auth, wrong),
                Err(tonic::Code::Unauthenticated),
                "{wrong:?}"
            );
        }
        let mut nobody = BearerAuth::new(&[]);
        assert_eq!(
            call(&mut nobody, Some("Bearer ")),
            Err(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn debug_hides_tokens() {
        let auth = BearerAuth::new(&["s3cret".into()]);
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
