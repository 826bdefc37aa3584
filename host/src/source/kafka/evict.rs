//! Fast restart: a host that starts again removes its previous incarnation
//! from each module's consumer group before joining, so the group rebalances
//! at once instead of keeping the dead member's partitions until its session
//! times out.
//!
//! Each consumer's `client.id` names the data directory and the module, and
//! brokers derive member ids from it (`<client.id>-<uuid>`), so the members
//! a previous run of this host left behind are found in the group's
//! description. librdkafka cannot make another member leave, so the
//! LeaveGroup request (with the member id) goes out over a plain connection
//! of its own; on a listener that needs TLS or SASL this is skipped and the
//! old member times out as before (static membership is the answer there).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;

use super::group::group_members;

/// Kafka API keys and the versions used (both non-flexible, valid on every
/// broker from 0.11 to 4.x).
const FIND_COORDINATOR: (i16, i16) = (10, 1);
const LEAVE_GROUP: (i16, i16) = (13, 1);
/// Kafka's UNKNOWN_MEMBER_ID: already gone.
const UNKNOWN_MEMBER_ID: i16 = 25;

/// Make the members of `group` whose id starts with `<client_id>-` leave it.
/// Returns how many left.
pub(super) fn evict_previous(
    client: &BaseConsumer,
    bootstrap: &str,
    group: &str,
    client_id: &str,
) -> Result<usize, String> {
    let prefix = format!("{client_id}-");
    let mut stale = group_members(client, group)?;
    stale.retain(|id| id.starts_with(&prefix));
    if stale.is_empty() {
        return Ok(0);
    }
    let coordinator = find_coordinator(bootstrap, group, client_id)?;
    let mut conn = Conn::open(&coordinator, client_id)?;
    let mut left = 0;
    for member in &stale {
        let mut body = Vec::new();
        put_str(&mut body, group);
        put_str(&mut body, member);
        let mut r = Reader(&conn.call(LEAVE_GROUP, &body)?);
        r.i32()?; // throttle time
        match r.i16()? {
            0 => left += 1,
            UNKNOWN_MEMBER_ID => {}
            code => return Err(format!("LeaveGroup for {member} in {group}: error {code}")),
        }
    }
    Ok(left)
}

/// The `host:port` of the coordinator of `group`, asked of the first
/// bootstrap server that answers.
fn find_coordinator(bootstrap: &str, group: &str, client_id: &str) -> Result<String, String> {
    let mut last = format!("no bootstrap server in `{bootstrap}`");
    for server in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let server = server.rsplit("://").next().unwrap_or(server);
        let answer = Conn::open(server, client_id).and_then(|mut c| {
            let mut body = Vec::new();
            put_str(&mut body, group);
            body.push(0); // key type: group
            let reply = c.call(FIND_COORDINATOR, &body)?;
            let mut r = Reader(&reply);
            r.i32()?; // throttle time
            let code = r.i16()?;
            r.nullable_str()?; // error message
            if code != 0 {
                return Err(format!("FindCoordinator for {group}: error {code}"));
            }
            r.i32()?; // node id
            let host = r.str()?;
            let port = r.i32()?;
            Ok(format!("{host}:{port}"))
        });
        match answer {
            Ok(c) => return Ok(c),
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(last)
}

/// One plaintext connection speaking the Kafka protocol.
struct Conn {
    stream: TcpStream,
    client_id: String,
    correlation: i32,
}

impl Conn {
    fn open(addr: &str, client_id: &str) -> Result<Conn, String> {
        let timeout = Duration::from_secs(5);
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| format!("resolving {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&sock, timeout)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok(Conn {
            stream,
            client_id: client_id.to_string(),
            correlation: 0,
        })
    }

    /// Send one request, return the response body (after its correlation
    /// id, which is checked).
    fn call(&mut self, (key, version): (i16, i16), body: &[u8]) -> Result<Vec<u8>, String> {
        self.correlation += 1;
        let mut req = Vec::with_capacity(64 + body.len());
        req.extend(key.to_be_bytes());
        req.extend(version.to_be_bytes());
        req.extend(self.correlation.to_be_bytes());
        put_str(&mut req, &self.client_id);
        req.extend(body);
        let mut framed = (req.len() as i32).to_be_bytes().to_vec();
        framed.extend(req);
        let io = |e: std::io::Error| format!("Kafka request {key}: {e}");
        self.stream.write_all(&framed).map_err(io)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(io)?;
        let len = i32::from_be_bytes(len);
        if !(4..=1 << 20).contains(&len) {
            return Err(format!("Kafka response {key}: implausible size {len}"));
        }
        let mut resp = vec![0u8; len as usize];
        self.stream.read_exact(&mut resp).map_err(io)?;
        let mut r = Reader(&resp);
        if r.i32()? != self.correlation {
            return Err(format!("Kafka response {key}: wrong correlation id"));
        }
        Ok(r.0.to_vec())
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as i16).to_be_bytes());
    buf.extend(s.as_bytes());
}

/// Big-endian reads off the front of a response.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or("Kafka response cut short")?;
        self.0 = rest;
        Ok(*head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        self.take::<2>().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn nullable_str(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        let bytes = self.0.get(..len).ok_or("Kafka response cut short")?;
        self.0 = &self.0[len..];
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }
    fn str(&mut self) -> Result<String, String> {
        self.nullable_str()?
            .ok_or_else(|| "Kafka response: null string".to_string())
    }
}
