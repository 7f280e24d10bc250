//! The connector over gRPC-Web: tonic's client generated from the
//! connector's `.proto`, over `tonic-web-wasm-client` (the browser's
//! `fetch`, with streamed response bodies for `GetMessageStream`). Every
//! call but the two open ones is signed as `docs/connector.md`
//! ("Authentication") says, with the connector's own signing code
//! ([`crate::auth::signed_bytes`]) and the browser's clock.

use crate::auth;
use crate::error::{ErrorKind, WebError};
use crate::proto;
use crate::proto::connector_client::ConnectorClient;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};
use tonic::metadata::AsciiMetadataValue;
use tonic_web_wasm_client::Client;
use zeroize::Zeroizing;

const SERVICE: &str = "/confidant.connector.v1.Connector/";

/// A connector, as this holder's relay key calls it.
pub struct Transport {
    client: ConnectorClient<Client>,
    key: SigningKey,
    audience: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A refused or failed call, with the connector's reason when it gave one.
pub fn connector_error(call: &str, status: &tonic::Status) -> WebError {
    let reason = status
        .metadata()
        .get("confidant-reason")
        .and_then(|reason| reason.to_str().ok())
        .map(|reason| format!(" [{reason}]"))
        .unwrap_or_default();
    WebError::new(
        ErrorKind::Connector,
        format!(
            "the connector refused {call}: {:?}: {}{reason}",
            status.code(),
            status.message()
        ),
    )
}

impl Transport {
    /// The connector at `url` (gRPC-Web, e.g. `http://127.0.0.1:50051`),
    /// called with the relay key `seed`; asks it for its audience (what
    /// requests are signed for).
    pub async fn connect(url: &str, seed: &Zeroizing<[u8; 32]>) -> Result<Self, WebError> {
        let mut client = ConnectorClient::new(Client::new(url.trim_end_matches('/').to_owned()));
        let info = client
            .get_connector_info(proto::GetConnectorInfoRequest {})
            .await
            .map_err(|status| connector_error("GetConnectorInfo", &status))?
            .into_inner();
        if info.audience.is_empty() || info.audience.len() > auth::MAX_AUDIENCE_LEN {
            return Err(WebError::new(
                ErrorKind::Connector,
                "the connector announced no usable audience",
            ));
        }
        Ok(Self {
            client,
            key: SigningKey::from_bytes(seed),
            audience: info.audience,
        })
    }

    /// The relay key's public half (this holder's identity at the
    /// connector).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    fn sign<T: prost::Message>(
        &self,
        call: &str,
        message: T,
    ) -> Result<tonic::Request<T>, WebError> {
        let mut nonce = [0u8; auth::NONCE_LEN];
        let (clock, random) = nonce.split_at_mut(8);
        // The browser's clock (milliseconds since the epoch; a float that
        // is a whole number well inside u64).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let now = js_sys::Date::now().max(0.0) as u64;
        clock.copy_from_slice(&now.to_be_bytes());
        getrandom::fill(random).map_err(|error| {
            WebError::new(ErrorKind::Environment, format!("no randomness: {error}"))
        })?;
        let method = format!("{SERVICE}{call}");
        let signature = self.key.sign(&auth::signed_bytes(
            &self.audience,
            &method,
            &nonce,
            &message.encode_to_vec(),
        ));
        let mut request = tonic::Request::new(message);
        for (key, value) in [
            (auth::PUBLIC_KEY_HEADER, b64(&self.public_key())),
            (auth::NONCE_HEADER, b64(&nonce)),
            (auth::SIGNATURE_HEADER, b64(&signature.to_bytes())),
        ] {
            let value = AsciiMetadataValue::try_from(value)
                .map_err(|error| WebError::new(ErrorKind::Internal, error.to_string()))?;
            request.metadata_mut().insert(key, value);
        }
        Ok(request)
    }

    /// Whether `token` is unused (asked before it is spent), and its
    /// creator's relay key.
    pub async fn token_info(&self, token: &str) -> Result<(Vec<u8>, bool), WebError> {
        let info = self
            .client
            .clone()
            .get_connection_token_info(proto::GetConnectionTokenInfoRequest {
                token: token.to_owned(),
            })
            .await
            .map_err(|status| connector_error("GetConnectionTokenInfo", &status))?
            .into_inner();
        Ok((info.creator_public_key, info.used))
    }

    /// Uses `token`: the connection's id. A retry by this holder answers
    /// the same id.
    pub async fn join(&self, token: &str) -> Result<String, WebError> {
        let request = self.sign(
            "AddConnectionFromToken",
            proto::AddConnectionFromTokenRequest {
                token: token.to_owned(),
            },
        )?;
        Ok(self
            .client
            .clone()
            .add_connection_from_token(request)
            .await
            .map_err(|status| connector_error("AddConnectionFromToken", &status))?
            .into_inner()
            .connection_id)
    }

    /// Hands `envelope` to the connector. Its client message id is derived
    /// from the envelope, so a retry of the same envelope is stored once.
    pub async fn send(&self, connection_id: &str, envelope: &[u8]) -> Result<u64, WebError> {
        let id = Sha256::digest(envelope);
        let request = self.sign(
            "SendMessage",
            proto::SendMessageRequest {
                connection_id: connection_id.to_owned(),
                message: envelope.to_vec(),
                client_message_id: id.get(..16).unwrap_or_default().to_vec(),
            },
        )?;
        Ok(self
            .client
            .clone()
            .send_message(request)
            .await
            .map_err(|status| connector_error("SendMessage", &status))?
            .into_inner()
            .id)
    }

    /// The waiting messages above `last_seen`, oldest first.
    pub async fn page(
        &self,
        last_seen: u64,
        limit: u32,
    ) -> Result<Vec<proto::ReceivedMessage>, WebError> {
        let request = self.sign(
            "GetMessagesPaginated",
            proto::GetMessagesPaginatedRequest {
                last_seen_message_id: last_seen,
                limit,
            },
        )?;
        Ok(self
            .client
            .clone()
            .get_messages_paginated(request)
            .await
            .map_err(|status| connector_error("GetMessagesPaginated", &status))?
            .into_inner()
            .messages)
    }

    /// The waiting messages above `last_seen`, then each new one as it is
    /// stored.
    pub async fn stream(
        &self,
        last_seen: u64,
    ) -> Result<tonic::Streaming<proto::ReceivedMessage>, WebError> {
        let request = self.sign(
            "GetMessageStream",
            proto::GetMessageStreamRequest {
                last_seen_message_id: last_seen,
            },
        )?;
        Ok(self
            .client
            .clone()
            .get_message_stream(request)
            .await
            .map_err(|status| connector_error("GetMessageStream", &status))?
            .into_inner())
    }

    /// Deletes these messages at the connector.
    pub async fn acknowledge(&self, ids: Vec<u64>) -> Result<u32, WebError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let request = self.sign(
            "AcknowledgeMessages",
            proto::AcknowledgeMessagesRequest { message_ids: ids },
        )?;
        Ok(self
            .client
            .clone()
            .acknowledge_messages(request)
            .await
            .map_err(|status| connector_error("AcknowledgeMessages", &status))?
            .into_inner()
            .deleted)
    }
}
