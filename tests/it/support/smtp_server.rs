//! A real SMTP server for tests, listening on 127.0.0.1 inside the test process.
//!
//! It speaks enough RFC 5321 for lettre (EHLO, AUTH PLAIN and LOGIN, MAIL, RCPT,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT, and STARTTLS when given a TLS
//! configuration), can be scripted to answer MAIL,
//! RCPT or the end of DATA with chosen replies ("451 try later" once, "550 no
//! such user"), to take a while per message, and to take in a message's payload
//! and then hang up or stall without answering it. It records every payload it
//! takes in and every message it accepts.
//!
//! It runs on its own thread with its own tokio runtime, so it serves synchronous
//! tests that drive the binary as well as `#[tokio::test]`s. The tests reach it
//! as `crate::support::smtp_server`; the window bench includes this file
//! (and its thread) by `#[path]`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::server_thread::ServerThread;

// Sibling files, named by path so the bench that includes this one finds them too.
#[path = "hold.rs"]
mod hold;
#[path = "received.rs"]
mod received;

pub use hold::Hold;

use received::b64;
pub use received::ReceivedMessage;

const HOSTNAME: &str = "smtp.test";

/// How the server behaves.
#[derive(Clone, Debug, Default)]
pub struct SmtpBehaviour {
    /// When set, AUTH PLAIN LOGIN is advertised, MAIL needs a login, and only
    /// this user and password are accepted.
    pub auth: Option<(String, String)>,
    /// Replies to the end of DATA, used in order, one per message, across all
    /// connections; once empty every message gets `250`.
    pub data_replies: Vec<String>,
    /// Replies to MAIL, used in order across all connections; once empty, `250`.
    pub mail_replies: Vec<String>,
    /// Replies to RCPT, used in order across all connections; once empty, `250`.
    pub rcpt_replies: Vec<String>,
    /// How long the server takes to accept each message.
    pub delay: Duration,
    /// When set, every message's final reply waits until it is released.
    pub hold: Option<Hold>,
    /// Messages whose payload the server takes in and then never answers.
    pub unanswered: Option<Unanswered>,
    /// A refused login's reply quotes the AUTH command it got, as some
    /// servers do.
    pub echo_auth: bool,
    /// When set, STARTTLS is offered and upgrades the connection with
    /// this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// EHLO and HELO with a name that is not fully qualified (no dot, no
    /// address literal) are refused, as Postfix's
    /// `reject_non_fqdn_helo_hostname` does.
    pub fqdn_helo: bool,
}

/// What the server does in place of the reply to a message it took in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// Closes the connection at once.
    HangUp,
    /// Keeps the connection open and says nothing more until the client goes.
    Stall,
}

/// Messages taken in and left without a reply.
#[derive(Clone, Debug)]
pub struct Unanswered {
    /// What the server does instead of replying.
    pub silence: Silence,
    /// How many messages; later ones are answered as usual.
    pub count: usize,
    /// Only messages to this recipient; any message when `None`.
    pub to: Option<String>,
}

impl SmtpBehaviour {
    /// Accepts every message at once, no login.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires a login with this user and password.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Answers the next messages' DATA with these replies, e.g. `["451 4.3.0 try later"]`.
    pub fn data_replies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, replies: I) -> Self {
        self.data_replies = replies.into_iter().map(Into::into).collect();
        self
    }

    /// Answers the next MAIL commands with these replies, e.g. `["421 4.3.2 busy"]`.
    pub fn mail_replies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, replies: I) -> Self {
        self.mail_replies = replies.into_iter().map(Into::into).collect();
        self
    }

    /// Answers the next RCPT commands with these replies, e.g. `["451 4.7.1 greylisted"]`.
    pub fn rcpt_replies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, replies: I) -> Self {
        self.rcpt_replies = replies.into_iter().map(Into::into).collect();
        self
    }

    /// Takes in the payload of the next `count` messages (to `to` only, when
    /// given) and then, instead of the final reply, does `silence`.
    pub fn unanswered(mut self, silence: Silence, count: usize, to: Option<&str>) -> Self {
        self.unanswered = Some(Unanswered {
            silence,
            count,
            to: to.map(str::to_owned),
        });
        self
    }

    /// Quotes the AUTH command in the reply that refuses it.
    pub fn echo_auth(mut self) -> Self {
        self.echo_auth = true;
        self
    }

    /// Offers STARTTLS, presenting `config`'s certificate.
    pub fn starttls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Refuses EHLO and HELO names that are not fully qualified.
    pub fn fqdn_helo(mut self) -> Self {
        self.fqdn_helo = true;
        self
    }

    /// Takes `delay` before answering each message's DATA.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Takes in every message's payload and answers it only once `hold`
    /// is released, so a test can act while messages are under way.
    pub fn hold(mut self, hold: &Hold) -> Self {
        self.hold = Some(hold.clone());
        self
    }
}

#[derive(Default)]
struct State {
    replies: VecDeque<String>,
    mail_replies: VecDeque<String>,
    rcpt_replies: VecDeque<String>,
    messages: Vec<ReceivedMessage>,
    transactions: usize,
    /// Transactions begun and not yet answered at the end of DATA.
    open: usize,
    most_open: usize,
    payloads: Vec<ReceivedMessage>,
    unanswered_left: usize,
    auth_failures: usize,
    helo_names: Vec<String>,
    tls_failures: usize,
}

impl State {
    /// Records a payload taken in, and says whether it goes unanswered.
    fn take_in(&mut self, message: &ReceivedMessage, rule: Option<&Unanswered>) -> Option<Silence> {
        self.payloads.push(message.clone());
        let rule = rule?;
        let matches = rule.to.as_ref().is_none_or(|to| message.to.contains(to));
        (matches && self.unanswered_left > 0).then(|| {
            self.unanswered_left -= 1;
            rule.silence
        })
    }
}

/// The next scripted reply in `queue`, else `ok`.
fn scripted(
    state: &Mutex<State>,
    queue: fn(&mut State) -> &mut VecDeque<String>,
    ok: &str,
) -> String {
    queue(&mut state.lock().unwrap())
        .pop_front()
        .unwrap_or_else(|| ok.to_owned())
}

/// A running server; stops when dropped.
pub struct SmtpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _thread: ServerThread,
}

impl SmtpServer {
    /// Starts a server on 127.0.0.1 with an unused port.
    pub fn start(behaviour: SmtpBehaviour) -> SmtpServer {
        let state = Arc::new(Mutex::new(State {
            replies: behaviour.data_replies.iter().cloned().collect(),
            mail_replies: behaviour.mail_replies.iter().cloned().collect(),
            rcpt_replies: behaviour.rcpt_replies.iter().cloned().collect(),
            unanswered_left: behaviour.unanswered.as_ref().map_or(0, |u| u.count),
            ..State::default()
        }));
        let behaviour = Arc::new(behaviour);
        let shared = Arc::clone(&state);
        let thread = ServerThread::start(([127, 0, 0, 1], 0).into(), move |stream| {
            let behaviour = Arc::clone(&behaviour);
            let state = Arc::clone(&shared);
            async move {
                let _ = session(stream, &behaviour, &state).await;
            }
        });
        SmtpServer {
            addr: thread.addr,
            state,
            _thread: thread,
        }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every accepted message so far, in order of acceptance.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.state.lock().unwrap().messages.clone()
    }

    /// How many mail transactions were begun (MAIL commands accepted), so a
    /// test can tell when each message's transaction started, not only when
    /// it ended.
    pub fn transactions(&self) -> usize {
        self.state.lock().unwrap().transactions
    }

    /// The most mail transactions under way at once, from MAIL to the
    /// answer at the end of DATA, over every connection.
    pub fn most_open_transactions(&self) -> usize {
        self.state.lock().unwrap().most_open
    }

    /// Every message whose payload the server took in (up to the final `.`),
    /// in order, whether it accepted, refused or never answered it.
    pub fn payloads(&self) -> Vec<ReceivedMessage> {
        self.state.lock().unwrap().payloads.clone()
    }

    /// How many messages reached the end of DATA, answered or not.
    pub fn data_attempts(&self) -> usize {
        self.state.lock().unwrap().payloads.len()
    }

    /// How many TLS handshakes after STARTTLS failed (the client refused
    /// the certificate, say).
    pub fn tls_failures(&self) -> usize {
        self.state.lock().unwrap().tls_failures
    }

    /// The names clients gave in EHLO or HELO, in order.
    pub fn helo_names(&self) -> Vec<String> {
        self.state.lock().unwrap().helo_names.clone()
    }

    /// How many logins were refused.
    pub fn auth_failures(&self) -> usize {
        self.state.lock().unwrap().auth_failures
    }
}

/// A connection, before or after STARTTLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Session<'a> {
    io: BufReader<Box<dyn Io>>,
    behaviour: &'a SmtpBehaviour,
    state: &'a Mutex<State>,
    /// STARTTLS has upgraded the connection.
    secure: bool,
}

impl Session<'_> {
    /// One line without its line ending; `None` at end of stream.
    async fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = Vec::new();
        if self.io.read_until(b'\n', &mut buf).await? == 0 {
            return Ok(None);
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    async fn reply(&mut self, text: &str) -> std::io::Result<()> {
        // One write per reply: split writes meet delayed ACKs and cost ~40 ms each.
        self.io.write_all(format!("{text}\r\n").as_bytes()).await?;
        self.io.flush().await
    }

    /// Answers STARTTLS and upgrades the connection; false when the
    /// handshake failed and the session is over.
    async fn starttls(&mut self, config: Arc<rustls::ServerConfig>) -> std::io::Result<bool> {
        self.reply("220 2.0.0 Ready to start TLS").await?;
        let plain = std::mem::replace(
            &mut self.io,
            BufReader::new(Box::new(tokio::io::join(
                tokio::io::empty(),
                tokio::io::sink(),
            ))),
        )
        .into_inner();
        match tokio_rustls::TlsAcceptor::from(config).accept(plain).await {
            Ok(tls) => {
                self.io = BufReader::new(Box::new(tls));
                self.secure = true;
                Ok(true)
            }
            Err(_) => {
                self.state.lock().unwrap().tls_failures += 1;
                Ok(false)
            }
        }
    }

    /// Reads the message after `354` up to the lone `.`, undoing dot-stuffing.
    async fn data(&mut self) -> std::io::Result<Option<String>> {
        let mut data = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.io.read_until(b'\n', &mut line).await? == 0 {
                return Ok(None);
            }
            if line == b".\r\n" || line == b".\n" {
                return Ok(Some(String::from_utf8_lossy(&data).into_owned()));
            }
            let start = usize::from(line.first() == Some(&b'.'));
            data.extend_from_slice(&line[start..]);
        }
    }

    async fn auth(&mut self, args: &str) -> std::io::Result<Option<String>> {
        let mut words = args.split_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let (user, password) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => r,
                    None => {
                        self.reply("334 ").await?;
                        self.line().await?.unwrap_or_default()
                    }
                };
                let decoded = b64(&response);
                let mut fields = decoded.split('\0').skip(1);
                (
                    fields.next().unwrap_or("").to_owned(),
                    fields.next().unwrap_or("").to_owned(),
                )
            }
            "LOGIN" => {
                let user = match initial {
                    Some(u) => b64(&u),
                    None => {
                        self.reply("334 VXNlcm5hbWU6").await?;
                        b64(&self.line().await?.unwrap_or_default())
                    }
                };
                self.reply("334 UGFzc3dvcmQ6").await?;
                let password = b64(&self.line().await?.unwrap_or_default());
                (user, password)
            }
            _ => {
                self.reply("504 5.5.4 unrecognised authentication mechanism")
                    .await?;
                return Ok(None);
            }
        };
        let accepted = self
            .behaviour
            .auth
            .as_ref()
            .is_some_and(|(u, p)| *u == user && *p == password);
        if accepted {
            self.reply("235 2.7.0 Authentication successful").await?;
            Ok(Some(user))
        } else {
            self.state.lock().unwrap().auth_failures += 1;
            let reply = match self.behaviour.echo_auth {
                true => format!("535 5.7.8 AUTH {args} refused"),
                false => "535 5.7.8 Authentication credentials invalid".to_owned(),
            };
            self.reply(&reply).await?;
            Ok(None)
        }
    }
}

/// One SMTP conversation, command by command. Kept as one function on
/// purpose: it reads like the protocol's own sequence (greeting, EHLO, AUTH,
/// MAIL, RCPT, DATA), which pieces would scatter.
async fn session(
    stream: TcpStream,
    behaviour: &SmtpBehaviour,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut s = Session {
        io: BufReader::new(Box::new(stream)),
        behaviour,
        state,
        secure: false,
    };
    s.reply(&format!("220 {HOSTNAME} ESMTP test server ready"))
        .await?;
    let mut user: Option<String> = None;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    while let Some(line) = s.line().await? {
        let (verb, args) = line.split_once(' ').unwrap_or((&line, ""));
        let verb = verb.to_ascii_uppercase();
        if verb == "EHLO" || verb == "HELO" {
            let name = args.trim().to_owned();
            state.lock().unwrap().helo_names.push(name.clone());
            let qualified = name.contains('.') || name.starts_with('[');
            if behaviour.fqdn_helo && !qualified {
                s.reply(&format!(
                    "504 5.5.2 <{name}>: Helo command rejected: need fully-qualified hostname"
                ))
                .await?;
                continue;
            }
        }
        match verb.as_str() {
            "EHLO" => {
                let mut lines = vec![HOSTNAME.to_owned(), "8BITMIME".into(), "SMTPUTF8".into()];
                if behaviour.auth.is_some() {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                if behaviour.tls.is_some() && !s.secure {
                    lines.push("STARTTLS".into());
                }
                lines.push("ENHANCEDSTATUSCODES".into());
                let last = lines.len() - 1;
                let text: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect();
                s.reply(&text.join("\r\n")).await?;
            }
            "HELO" => s.reply(&format!("250 {HOSTNAME}")).await?,
            "STARTTLS" => match (&behaviour.tls, s.secure) {
                (Some(config), false) => {
                    if !s.starttls(Arc::clone(config)).await? {
                        return Ok(());
                    }
                    user = None;
                    from = None;
                    to.clear();
                }
                _ => s.reply("502 5.5.1 STARTTLS not available").await?,
            },
            "AUTH" if behaviour.auth.is_none() => {
                s.reply("503 5.5.1 authentication not enabled").await?
            }
            "AUTH" if user.is_some() => s.reply("503 5.5.1 already authenticated").await?,
            "AUTH" => user = s.auth(args).await?,
            "MAIL" if behaviour.auth.is_some() && user.is_none() => {
                s.reply("530 5.7.0 Authentication required").await?
            }
            "MAIL" => {
                let reply = scripted(state, |st| &mut st.mail_replies, "250 2.1.0 OK");
                if reply.starts_with('2') {
                    let mut st = state.lock().unwrap();
                    st.transactions += 1;
                    if from.is_none() {
                        st.open += 1;
                        st.most_open = st.most_open.max(st.open);
                    }
                    drop(st);
                    from = Some(angle(args));
                    to.clear();
                }
                s.reply(&reply).await?;
            }
            "RCPT" if from.is_none() => s.reply("503 5.5.1 MAIL first").await?,
            "RCPT" => {
                let reply = scripted(state, |st| &mut st.rcpt_replies, "250 2.1.5 OK");
                if reply.starts_with('2') {
                    to.push(angle(args));
                }
                s.reply(&reply).await?;
            }
            "DATA" if to.is_empty() => s.reply("503 5.5.1 RCPT first").await?,
            "DATA" => {
                s.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                let Some(data) = s.data().await? else {
                    return Ok(());
                };
                let message = ReceivedMessage {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                    user: user.clone(),
                };
                let silence = state
                    .lock()
                    .unwrap()
                    .take_in(&message, behaviour.unanswered.as_ref());
                match silence {
                    Some(Silence::HangUp) => return Ok(()),
                    Some(Silence::Stall) => {
                        // Read (and ignore) whatever comes until the client goes.
                        tokio::io::copy(&mut s.io, &mut tokio::io::sink()).await?;
                        return Ok(());
                    }
                    None => {}
                }
                if let Some(hold) = &behaviour.hold {
                    hold.released().await;
                }
                tokio::time::sleep(behaviour.delay).await;
                let reply = {
                    let mut st = state.lock().unwrap();
                    let reply = st
                        .replies
                        .pop_front()
                        .unwrap_or_else(|| "250 2.0.0 OK queued".to_owned());
                    if reply.starts_with('2') {
                        st.messages.push(message);
                    }
                    st.open -= 1;
                    reply
                };
                s.reply(&reply).await?;
            }
            "RSET" => {
                if from.take().is_some() {
                    state.lock().unwrap().open -= 1;
                }
                to.clear();
                s.reply("250 2.0.0 OK").await?;
            }
            "NOOP" => s.reply("250 2.0.0 OK").await?,
            "VRFY" => s.reply("252 2.0.0 cannot verify").await?,
            "QUIT" => {
                s.reply("221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => s.reply("502 5.5.2 command not recognised").await?,
        }
    }
    Ok(())
}

/// `FROM:<a@b> SIZE=1` → `a@b`.
fn angle(args: &str) -> String {
    match (args.find('<'), args.find('>')) {
        (Some(a), Some(b)) if a < b => args[a + 1..b].to_owned(),
        _ => args
            .split_once(':')
            .map_or(args, |(_, v)| v)
            .trim()
            .to_owned(),
    }
}
