//! The request handler: a question in the cluster zone (or a reverse name of a cluster address)
//! is answered from the record cache, authoritatively, with the zone's SOA as the authority of
//! NXDOMAIN and NODATA answers; every other question is forwarded ([`crate::forward`]). An
//! ExternalName Service's CNAME is followed as CoreDNS does: the target is answered locally when
//! it is in the zone, else asked upstream, and its records follow the CNAME.
//!
//! hickory-server's listeners call it for every UDP datagram and TCP message; encoding the
//! response for the client's transport (UDP: 512 bytes, or the client's EDNS payload size, with
//! TC set when cut) is hickory's.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::cache::RecordCache;
use crate::forward::{Forwarder, Transport};
use crate::records::{self, Lookup, Zone};

/// EDNS payload size advertised in responses (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// How many CNAMEs of ExternalName Services are followed inside the zone.
const MAX_ALIASES: usize = 8;

/// Answers from the cache, forwards the rest.
pub struct ClusterDnsHandler {
    pub zone: Zone,
    pub cache: RecordCache,
    pub forwarder: Forwarder,
}

/// A response to send: header fields and sections.
#[derive(Debug, Default)]
pub struct Reply {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub truncated: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            ..Default::default()
        }
    }
}

impl ClusterDnsHandler {
    /// The reply to one question; `raw` is the client's whole query, forwarded as is.
    pub async fn answer(
        &self,
        qname: &Name,
        qtype: RecordType,
        raw: &[u8],
        transport: Transport,
    ) -> Reply {
        let (lookup, serial) = self
            .cache
            .read(|c| (records::lookup(&self.zone, c, qname, qtype), c.serial));
        match lookup {
            Lookup::Forward => self.forward(raw, transport).await,
            Lookup::Alias { cname, target } => self.alias(cname, target, qtype, transport).await,
            other => self.authoritative(other, serial),
        }
    }

    fn authoritative(&self, lookup: Lookup, serial: u32) -> Reply {
        let mut reply = Reply {
            authoritative: true,
            ..Default::default()
        };
        match lookup {
            Lookup::Records {
                answers,
                additionals,
            } => {
                reply.answers = answers;
                reply.additionals = additionals;
            }
            Lookup::NoData => reply.authorities.push(self.zone.soa(serial)),
            Lookup::NxDomain => {
                reply.code = ResponseCode::NXDomain;
                reply.authorities.push(self.zone.soa(serial));
            }
            Lookup::Forward | Lookup::Alias { .. } => unreachable!("handled by the caller"),
        }
        reply
    }

    async fn forward(&self, raw: &[u8], transport: Transport) -> Reply {
        match self.forwarder.forward(raw, transport).await {
            Ok(m) => Reply {
                code: m.metadata.response_code,
                authoritative: m.metadata.authoritative,
                truncated: m.metadata.truncation,
                answers: m.answers,
                authorities: m.authorities,
                additionals: m.additionals,
            },
            Err(e) => {
                tracing::debug!(error = %e, "forwarding failed");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }

    /// The CNAME of an ExternalName Service, followed by what its target resolves to.
    async fn alias(
        &self,
        cname: Box<Record>,
        mut target: Name,
        qtype: RecordType,
        transport: Transport,
    ) -> Reply {
        let mut reply = Reply {
            authoritative: true,
            answers: vec![*cname],
            ..Default::default()
        };
        if qtype == RecordType::CNAME {
            return reply;
        }
        for _ in 0..MAX_ALIASES {
            let (lookup, serial) = self
                .cache
                .read(|c| (records::lookup(&self.zone, c, &target, qtype), c.serial));
            match lookup {
                Lookup::Alias {
                    cname,
                    target: next,
                } => {
                    reply.answers.push(*cname);
                    target = next;
                }
                Lookup::Forward => {
                    let mut q = Message::query();
                    q.metadata.id = rand_id();
                    q.metadata.recursion_desired = true;
                    q.add_query(Query::query(target.clone(), qtype));
                    let Ok(raw) = q.to_vec() else {
                        return reply;
                    };
                    let upstream = self.forward(&raw, transport).await;
                    if upstream.code != ResponseCode::ServFail {
                        reply.code = upstream.code;
                    }
                    reply.answers.extend(upstream.answers);
                    return reply;
                }
                other => {
                    let local = self.authoritative(other, serial);
                    reply.code = local.code;
                    reply.answers.extend(local.answers);
                    reply.authorities = local.authorities;
                    reply.additionals = local.additionals;
                    return reply;
                }
            }
        }
        reply
    }
}

/// A query id for the queries the server makes itself.
fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u16
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, EDNS_PAYLOAD));
            e.set_version(0);
            e.set_dnssec_ok(req.flags().dnssec_ok);
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let info = match request.request_info() {
            Ok(info)
                if request.metadata.message_type == MessageType::Query
                    && request.metadata.op_code == OpCode::Query =>
            {
                info
            }
            Ok(_) => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::NotImp);
                return send(&mut response_handle, msg, &request.metadata).await;
            }
            Err(_) => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return send(&mut response_handle, msg, &request.metadata).await;
            }
        };
        let transport = match info.protocol {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let query = info.query.original();
        let reply = self
            .answer(
                query.name(),
                query.query_type(),
                request.as_slice(),
                transport,
            )
            .await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.truncation = reply.truncated;
        metadata.recursion_available = true;
        let msg = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        send(&mut response_handle, msg, &request.metadata).await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match handle.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending a DNS response failed");
            let mut m = Metadata::response_from_request(request);
            m.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata: m,
                counts: Default::default(),
            })
        }
    }
}
