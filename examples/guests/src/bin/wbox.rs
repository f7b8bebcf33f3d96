//! A tiny multi-call userland for Wasm pods, in the spirit of busybox: the command is argv[0]'s
//! base name (`echo`, `sleep`, `sh`, `ls`, `cat`, ...), or argv[1] when argv[0] is `wbox`.
//!
//! It exists so the commands operators and conformance suites type — `kubectl exec -it <pod> --
//! sh`, `crictl exec <ctr> echo -n hello`, critest's `sh -c "while true; do echo x; sleep 1;
//! done"` — mean something inside a Wasm container, where there are no processes to spawn.
//! `sh` understands a small POSIX subset: words with quotes and `$VAR`/`$?`, `;`, newlines,
//! `&&`, `||`, `|` (the left side's output becomes the right side's input), `>`/`>>`/`2>&1`,
//! `VAR=value`, `while`/`until`/`if`, `!`, and the builtins below. Everything runs in this one
//! instance; `exit N` ends it with that code. Build it for `wasm32-wasip1` when exit codes
//! matter: a WASI 0.2 command can only exit with success or failure (0 or 1).

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::time::Duration;

const HELP: &str = "wbox: commands: cat dd echo env exit false grep hostname ls mkdir pgrep \
pwd rm sh sleep test [ top touch true uname wc";

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.is_empty() {
        args.push("sh".into());
    }
    if base(&args[0]) == "wbox" {
        args.remove(0);
        if args.is_empty() {
            eprintln!("{HELP}");
            std::process::exit(2);
        }
    }
    let mut sh = Shell::default();
    let mut out = io::stdout().lock();
    let mut err = io::stderr();
    let code = sh.run_command(&args, &mut Input::Stdin, &mut out, &mut err);
    let _ = out.flush();
    std::process::exit(sh.exit.unwrap_or(code));
}

fn base(s: &str) -> &str {
    let s = s.rsplit('/').next().unwrap_or(s);
    s.strip_suffix(".wasm").unwrap_or(s)
}

/// Where a command's standard input comes from: the instance's stdin, or a buffer (a pipe's
/// left side, or nothing).
enum Input {
    Stdin,
    Buf(io::Cursor<Vec<u8>>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Stdin => io::stdin().read(buf),
            Input::Buf(c) => c.read(buf),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Op(&'static str),
}

/// A parsed command list.
#[derive(Debug, Clone)]
enum Node {
    /// Words (still unexpanded: `$` marks a variable) and redirections.
    Simple {
        words: Vec<String>,
        redirects: Vec<(String, String)>,
    },
    Pipe(Vec<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Seq(Vec<Node>),
    While {
        until: bool,
        cond: Box<Node>,
        body: Box<Node>,
    },
    If {
        cond: Box<Node>,
        then: Box<Node>,
        els: Option<Box<Node>>,
    },
}

/// A character of a word that came from inside single quotes or a backslash escape is marked
/// so `$` expansion skips it.
const LITERAL_DOLLAR: char = '\u{E000}';

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = src.chars().peekable();
    let mut word: Option<String> = None;
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    toks.push(Tok::Word(w));
                }
            }
            '\n' | ';' | '&' | '|' | '>' | '<' => {
                if let Some(w) = word.take() {
                    // `2>&1` and `2>file`: a lone `2` before `>` is the fd.
                    if c == '>' && w == "2" {
                        if chars.peek() == Some(&'&') {
                            chars.next();
                            match chars.next() {
                                Some('1') => toks.push(Tok::Op("2>&1")),
                                _ => return Err("only 2>&1 is supported".into()),
                            }
                        } else {
                            toks.push(Tok::Op("2>"));
                        }
                        continue;
                    }
                    toks.push(Tok::Word(w));
                }
                let op = match (c, chars.peek()) {
                    ('\n', _) | (';', _) => ";",
                    ('&', Some('&')) => {
                        chars.next();
                        "&&"
                    }
                    ('|', Some('|')) => {
                        chars.next();
                        "||"
                    }
                    ('|', _) => "|",
                    ('>', Some('>')) => {
                        chars.next();
                        ">>"
                    }
                    ('>', _) => ">",
                    ('<', _) => "<",
                    _ => return Err(format!("unsupported operator {c:?}")),
                };
                toks.push(Tok::Op(op));
            }
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        toks.push(Tok::Op(";"));
                        break;
                    }
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some('$') => w.push(LITERAL_DOLLAR),
                        Some(c) => w.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('$') => w.push(LITERAL_DOLLAR),
                            Some(c @ ('"' | '\\' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some('$') => word.get_or_insert_with(String::new).push(LITERAL_DOLLAR),
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => {}
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        toks.push(Tok::Word(w));
    }
    Ok(toks)
}

/// Recursive-descent parser over tokens. `Err(None)` means the input ended inside a compound
/// command (an interactive shell then reads another line).
struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

type PResult<T> = Result<T, Option<String>>;

impl Parser {
    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }
    fn skip_separators(&mut self) {
        while self.is_op(";") {
            self.pos += 1;
        }
    }
    fn expect_word(&mut self, kw: &str) -> PResult<()> {
        self.skip_separators();
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) if w == kw => {
                self.pos += 1;
                Ok(())
            }
            None => Err(None),
            Some(t) => Err(Some(format!("expected {kw}, found {t:?}"))),
        }
    }

    /// A list up to one of `stop` keywords (not consumed) or the end.
    fn list(&mut self, stop: &[&str]) -> PResult<Node> {
        let mut items = Vec::new();
        loop {
            self.skip_separators();
            match self.peek_word() {
                Some(w) if stop.contains(&w) => break,
                _ => {}
            }
            if self.pos >= self.toks.len() {
                if stop.is_empty() {
                    break;
                }
                return Err(None);
            }
            items.push(self.and_or()?);
        }
        Ok(Node::Seq(items))
    }

    fn and_or(&mut self) -> PResult<Node> {
        let mut left = self.pipeline()?;
        loop {
            if self.is_op("&&") {
                self.pos += 1;
                self.skip_separators();
                left = Node::And(Box::new(left), Box::new(self.pipeline()?));
            } else if self.is_op("||") {
                self.pos += 1;
                self.skip_separators();
                left = Node::Or(Box::new(left), Box::new(self.pipeline()?));
            } else {
                return Ok(left);
            }
        }
    }

    fn pipeline(&mut self) -> PResult<Node> {
        let negate = self.peek_word() == Some("!");
        if negate {
            self.pos += 1;
        }
        let mut stages = vec![self.command()?];
        while self.is_op("|") {
            self.pos += 1;
            self.skip_separators();
            stages.push(self.command()?);
        }
        let node = if stages.len() == 1 {
            stages.pop().unwrap_or(Node::Seq(Vec::new()))
        } else {
            Node::Pipe(stages)
        };
        Ok(if negate {
            Node::Not(Box::new(node))
        } else {
            node
        })
    }

    fn command(&mut self) -> PResult<Node> {
        match self.peek_word() {
            Some(kw @ ("while" | "until")) => {
                let until = kw == "until";
                self.pos += 1;
                let cond = self.list(&["do"])?;
                self.expect_word("do")?;
                let body = self.list(&["done"])?;
                self.expect_word("done")?;
                Ok(Node::While {
                    until,
                    cond: Box::new(cond),
                    body: Box::new(body),
                })
            }
            Some("if") => {
                self.pos += 1;
                let node = self.if_clause()?;
                self.expect_word("fi")?;
                Ok(node)
            }
            _ => self.simple(),
        }
    }

    /// The rest of an `if` (or `elif`) after its keyword, up to its `fi` (not consumed: an
    /// `elif` shares the outer `fi`).
    fn if_clause(&mut self) -> PResult<Node> {
        let cond = self.list(&["then"])?;
        self.expect_word("then")?;
        let then = self.list(&["else", "elif", "fi"])?;
        self.skip_separators();
        let els = match self.peek_word() {
            Some("else") => {
                self.pos += 1;
                Some(Box::new(self.list(&["fi"])?))
            }
            Some("elif") => {
                self.pos += 1;
                Some(Box::new(self.if_clause()?))
            }
            _ => None,
        };
        Ok(Node::If {
            cond: Box::new(cond),
            then: Box::new(then),
            els,
        })
    }

    fn simple(&mut self) -> PResult<Node> {
        let mut words = Vec::new();
        let mut redirects = Vec::new();
        loop {
            match self.toks.get(self.pos) {
                Some(Tok::Word(w)) => {
                    words.push(w.clone());
                    self.pos += 1;
                }
                Some(Tok::Op(op @ (">" | ">>" | "2>" | "<"))) => {
                    let op = *op;
                    self.pos += 1;
                    match self.toks.get(self.pos) {
                        Some(Tok::Word(target)) => {
                            redirects.push((op.to_string(), target.clone()));
                            self.pos += 1;
                        }
                        _ => return Err(Some(format!("{op} needs a file name"))),
                    }
                }
                Some(Tok::Op("2>&1")) => {
                    redirects.push(("2>&1".into(), String::new()));
                    self.pos += 1;
                }
                _ => break,
            }
        }
        if words.is_empty() && redirects.is_empty() {
            return match self.toks.get(self.pos) {
                None => Err(None),
                Some(t) => Err(Some(format!("syntax error near {t:?}"))),
            };
        }
        Ok(Node::Simple { words, redirects })
    }
}

fn parse(src: &str) -> PResult<Node> {
    let toks = tokenize(src).map_err(Some)?;
    let mut p = Parser { toks, pos: 0 };
    let node = p.list(&[])?;
    if p.pos < p.toks.len() {
        return Err(Some(format!("syntax error near {:?}", p.toks[p.pos])));
    }
    Ok(node)
}

#[derive(Default)]
struct Shell {
    vars: HashMap<String, String>,
    status: i32,
    /// Set by `exit`: unwind and end the instance with this code.
    exit: Option<i32>,
}

/// Where a stage's stderr goes: the instance's stderr, or wherever stdout goes (`2>&1`).
type Sink<'a> = &'a mut dyn Write;

impl Shell {
    fn var(&self, name: &str) -> Option<String> {
        if name == "?" {
            return Some(self.status.to_string());
        }
        self.vars
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    fn expand(&self, word: &str) -> String {
        let mut out = String::new();
        let mut chars = word.chars().peekable();
        while let Some(c) = chars.next() {
            if c == LITERAL_DOLLAR {
                out.push('$');
            } else if c == '$' {
                let mut name = String::new();
                if chars.peek() == Some(&'{') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                        name.push(c);
                    }
                } else if chars.peek() == Some(&'?') {
                    chars.next();
                    name.push('?');
                } else {
                    while let Some(&c) = chars.peek() {
                        if c.is_ascii_alphanumeric() || c == '_' {
                            name.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                if name.is_empty() {
                    out.push('$');
                } else {
                    out.push_str(&self.var(&name).unwrap_or_default());
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn eval(&mut self, node: &Node, input: &mut Input, out: Sink, err: Sink) -> i32 {
        if self.exit.is_some() {
            return self.status;
        }
        let code = match node {
            Node::Seq(items) => {
                let mut code = self.status;
                for n in items {
                    code = self.eval(n, input, out, err);
                    if self.exit.is_some() {
                        break;
                    }
                }
                code
            }
            Node::And(a, b) => {
                let c = self.eval(a, input, out, err);
                if c == 0 {
                    self.eval(b, input, out, err)
                } else {
                    c
                }
            }
            Node::Or(a, b) => {
                let c = self.eval(a, input, out, err);
                if c != 0 {
                    self.eval(b, input, out, err)
                } else {
                    c
                }
            }
            Node::Not(n) => i32::from(self.eval(n, input, out, err) == 0),
            Node::Pipe(stages) => {
                let mut data: Option<Vec<u8>> = None;
                let mut code = 0;
                for (i, stage) in stages.iter().enumerate() {
                    let mut stage_in = match data.take() {
                        Some(d) => Input::Buf(io::Cursor::new(d)),
                        None if i == 0 => Input::Stdin,
                        None => Input::Buf(io::Cursor::new(Vec::new())),
                    };
                    if i + 1 == stages.len() {
                        code = self.eval(stage, &mut stage_in, out, err);
                    } else {
                        let mut buf = Vec::new();
                        self.eval(stage, &mut stage_in, &mut buf, err);
                        data = Some(buf);
                    }
                }
                code
            }
            Node::While { until, cond, body } => {
                let mut code = 0;
                loop {
                    let c = self.eval(cond, input, out, err);
                    if self.exit.is_some() || (c == 0) == *until {
                        break;
                    }
                    code = self.eval(body, input, out, err);
                    if self.exit.is_some() {
                        break;
                    }
                }
                code
            }
            Node::If { cond, then, els } => {
                if self.eval(cond, input, out, err) == 0 {
                    self.eval(then, input, out, err)
                } else if let Some(e) = els {
                    self.eval(e, input, out, err)
                } else {
                    0
                }
            }
            Node::Simple { words, redirects } => self.simple(words, redirects, input, out, err),
        };
        self.status = code;
        code
    }

    fn simple(
        &mut self,
        words: &[String],
        redirects: &[(String, String)],
        input: &mut Input,
        out: Sink,
        err: Sink,
    ) -> i32 {
        let mut argv: Vec<String> = words.iter().map(|w| self.expand(w)).collect();
        // Leading NAME=value words are assignments.
        while let Some((name, value)) = argv.first().and_then(|w| w.split_once('=')) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            self.vars.insert(name.to_string(), value.to_string());
            argv.remove(0);
        }
        if argv.is_empty() {
            return 0;
        }
        let mut file_out: Option<std::fs::File> = None;
        let mut file_err: Option<std::fs::File> = None;
        let mut file_in: Option<Input> = None;
        let mut err_to_out = false;
        for (op, target) in redirects {
            let target = self.expand(target);
            let opened = match op.as_str() {
                "2>&1" => {
                    err_to_out = true;
                    continue;
                }
                "<" => match std::fs::read(&target) {
                    Ok(d) => {
                        file_in = Some(Input::Buf(io::Cursor::new(d)));
                        continue;
                    }
                    Err(e) => Err(e),
                },
                ">>" => std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&target),
                _ => std::fs::File::create(&target),
            };
            match opened {
                Ok(f) if op == "2>" => file_err = Some(f),
                Ok(f) => file_out = Some(f),
                Err(e) => {
                    let _ = writeln!(err, "sh: {target}: {}", errno_text(&e));
                    return 1;
                }
            }
        }
        let input: &mut Input = match file_in.as_mut() {
            Some(i) => i,
            None => input,
        };
        let out: Sink = match file_out.as_mut() {
            Some(f) => f,
            None => out,
        };
        if err_to_out {
            // Both streams go to `out`: run with a buffer for stderr and append it after.
            let mut buf = Vec::new();
            let code = self.run_command(&argv, input, out, &mut buf);
            let _ = out.write_all(&buf);
            return code;
        }
        let err: Sink = match file_err.as_mut() {
            Some(f) => f,
            None => err,
        };
        self.run_command(&argv, input, out, err)
    }

    fn run_command(&mut self, argv: &[String], input: &mut Input, out: Sink, err: Sink) -> i32 {
        let name = base(&argv[0]);
        let args = &argv[1..];
        let r = match name {
            "sh" | "ash" | "bash" => return self.sh(args, input, out, err),
            "exit" => {
                let code = args
                    .first()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(self.status);
                self.exit = Some(code);
                return code;
            }
            "export" => {
                for a in args {
                    if let Some((k, v)) = a.split_once('=') {
                        self.vars.insert(k.into(), v.into());
                    }
                }
                Ok(0)
            }
            "echo" => echo(args, out),
            "sleep" => sleep(args),
            "true" | ":" => Ok(0),
            "false" => Ok(1),
            "cat" => cat(args, input, out, err),
            "ls" => ls(args, out, err),
            "top" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "env" => {
                let mut all: Vec<(String, String)> = std::env::vars().collect();
                all.extend(self.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
                all.sort();
                all.dedup_by(|a, b| a.0 == b.0);
                all.iter()
                    .try_for_each(|(k, v)| writeln!(out, "{k}={v}"))
                    .map(|()| 0)
            }
            "pwd" => {
                std::env::current_dir().and_then(|d| writeln!(out, "{}", d.display()).map(|()| 0))
            }
            "hostname" => {
                let h = std::env::var("HOSTNAME")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                    .unwrap_or_default();
                writeln!(out, "{}", h.trim()).map(|()| 0)
            }
            "uname" => writeln!(out, "WASI").map(|()| 0),
            "pgrep" | "ps" => Ok(1),
            "touch" => each_path(args, err, |p| {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .map(drop)
            }),
            "mkdir" => {
                let parents = args.iter().any(|a| a == "-p");
                each_path(args, err, |p| {
                    if parents {
                        std::fs::create_dir_all(p)
                    } else {
                        std::fs::create_dir(p)
                    }
                })
            }
            "rm" => {
                let recursive = args.iter().any(|a| a.starts_with('-') && a.contains('r'));
                each_path(args, err, |p| {
                    if recursive && std::path::Path::new(p).is_dir() {
                        std::fs::remove_dir_all(p)
                    } else {
                        std::fs::remove_file(p)
                    }
                })
            }
            "wc" => wc(args, input, out),
            "grep" => grep(args, input, out, err),
            "dd" => dd(args, input, out),
            "test" => Ok(test(args)),
            "[" => match args.split_last() {
                Some((last, rest)) if last == "]" => Ok(test(rest)),
                _ => {
                    let _ = writeln!(err, "[: missing ]");
                    Ok(2)
                }
            },
            "help" | "wbox" => writeln!(out, "{HELP}").map(|()| 0),
            other => {
                let _ = writeln!(err, "{other}: command not found");
                Ok(127)
            }
        };
        match r {
            Ok(code) => code,
            Err(e) => {
                let _ = writeln!(err, "{name}: {}", errno_text(&e));
                1
            }
        }
    }

    /// `sh -c SCRIPT [NAME ARGS...]`, `sh SCRIPT_FILE`, or an interactive shell on stdin.
    fn sh(&mut self, args: &[String], input: &mut Input, out: Sink, err: Sink) -> i32 {
        let mut args = args.iter().filter(|a| *a != "-i" && *a != "-l");
        match args.next().map(String::as_str) {
            Some("-c") => {
                let Some(script) = args.next() else {
                    let _ = writeln!(err, "sh: -c requires an argument");
                    return 2;
                };
                self.script(script, input, out, err)
            }
            Some(file) => match std::fs::read_to_string(file) {
                Ok(s) => self.script(&s, input, out, err),
                Err(e) => {
                    let _ = writeln!(err, "sh: {file}: {}", errno_text(&e));
                    127
                }
            },
            None => self.interactive(input, out, err),
        }
    }

    fn script(&mut self, src: &str, input: &mut Input, out: Sink, err: Sink) -> i32 {
        match parse(src) {
            Ok(node) => self.eval(&node, input, out, err),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "sh: {}",
                    e.unwrap_or_else(|| "unexpected end of input".into())
                );
                2
            }
        }
    }

    /// Reads commands line by line; a prompt only when stdin and stdout are terminals.
    fn interactive(&mut self, input: &mut Input, out: Sink, err: Sink) -> i32 {
        let tty = matches!(input, Input::Stdin) && io::stdin().is_terminal();
        let mut pending = String::new();
        let mut reader = io::BufReader::new(input);
        loop {
            if tty {
                let _ = write!(out, "{}", if pending.is_empty() { "$ " } else { "> " });
            }
            let _ = out.flush();
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return self.status,
                Ok(_) => {}
                Err(e) => {
                    let _ = writeln!(err, "sh: {}", errno_text(&e));
                    return 1;
                }
            }
            pending.push_str(&line);
            match parse(&pending) {
                Ok(node) => {
                    pending.clear();
                    // Commands run interactively read stdin from the terminal themselves.
                    let mut stdin = Input::Stdin;
                    self.eval(&node, &mut stdin, out, err);
                    let _ = out.flush();
                    if let Some(code) = self.exit {
                        return code;
                    }
                }
                Err(None) => {}
                Err(Some(e)) => {
                    pending.clear();
                    let _ = writeln!(err, "sh: {e}");
                    self.status = 2;
                }
            }
        }
    }
}

/// The message of an I/O error without Rust's " (os error N)" suffix.
fn errno_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn echo(args: &[String], out: Sink) -> io::Result<i32> {
    let (newline, args) = match args.first().map(String::as_str) {
        Some("-n") => (false, &args[1..]),
        _ => (true, args),
    };
    write!(out, "{}", args.join(" "))?;
    if newline {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(0)
}

fn sleep(args: &[String]) -> io::Result<i32> {
    let mut total = 0f64;
    for a in args {
        if a == "inf" || a == "infinity" {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let (num, mult) = match a.chars().last() {
            Some('s') => (&a[..a.len() - 1], 1.0),
            Some('m') => (&a[..a.len() - 1], 60.0),
            Some('h') => (&a[..a.len() - 1], 3600.0),
            _ => (a.as_str(), 1.0),
        };
        match num.parse::<f64>() {
            Ok(n) if n >= 0.0 && n.is_finite() => total += n * mult,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid time interval '{a}'"),
                ));
            }
        }
    }
    std::thread::sleep(Duration::from_secs_f64(total.min(1e9)));
    Ok(0)
}

fn cat(args: &[String], input: &mut Input, out: Sink, err: Sink) -> io::Result<i32> {
    if args.is_empty() || args.iter().all(|a| a == "-") {
        let mut buf = [0u8; 8192];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(0);
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
    }
    let mut code = 0;
    for a in args {
        match std::fs::File::open(a) {
            Ok(mut f) => {
                io::copy(&mut f, out)?;
            }
            Err(e) => {
                writeln!(err, "cat: {a}: {}", errno_text(&e))?;
                code = 1;
            }
        }
    }
    Ok(code)
}

fn ls(args: &[String], out: Sink, err: Sink) -> io::Result<i32> {
    let all = args
        .iter()
        .any(|a| a.starts_with('-') && (a.contains('a') || a.contains('A')));
    let long = args.iter().any(|a| a.starts_with('-') && a.contains('l'));
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let paths = if paths.is_empty() {
        vec![".".to_string()]
    } else {
        paths.into_iter().cloned().collect()
    };
    let mut code = 0;
    for p in &paths {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) => {
                writeln!(err, "ls: {p}: {}", errno_text(&e))?;
                code = 2;
                continue;
            }
        };
        if !meta.is_dir() {
            writeln!(out, "{p}")?;
            continue;
        }
        if paths.len() > 1 {
            writeln!(out, "{p}:")?;
        }
        let mut names: Vec<(String, bool, u64)> = std::fs::read_dir(p)?
            .filter_map(Result::ok)
            .map(|e| {
                let m = e.metadata().ok();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.as_ref().is_some_and(|m| m.is_dir()),
                    m.map_or(0, |m| m.len()),
                )
            })
            .filter(|(n, _, _)| all || !n.starts_with('.'))
            .collect();
        names.sort();
        for (n, dir, len) in names {
            if long {
                writeln!(out, "{} {len:>10} {n}", if dir { 'd' } else { '-' })?;
            } else {
                writeln!(out, "{n}")?;
            }
        }
    }
    Ok(code)
}

fn each_path(
    args: &[String],
    err: Sink,
    mut f: impl FnMut(&str) -> io::Result<()>,
) -> io::Result<i32> {
    let mut code = 0;
    for a in args.iter().filter(|a| !a.starts_with('-')) {
        if let Err(e) = f(a) {
            writeln!(err, "{a}: {}", errno_text(&e))?;
            code = 1;
        }
    }
    Ok(code)
}

fn wc(args: &[String], input: &mut Input, out: Sink) -> io::Result<i32> {
    let mut data = Vec::new();
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if files.is_empty() {
        input.read_to_end(&mut data)?;
    } else {
        for f in files {
            data.extend(std::fs::read(f)?);
        }
    }
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    let words = String::from_utf8_lossy(&data).split_whitespace().count();
    match args.iter().find(|a| a.starts_with('-')).map(String::as_str) {
        Some("-l") => writeln!(out, "{lines}")?,
        Some("-w") => writeln!(out, "{words}")?,
        Some("-c") => writeln!(out, "{}", data.len())?,
        _ => writeln!(out, "{lines} {words} {}", data.len())?,
    }
    Ok(0)
}

/// `test` / `[`: exit 0 when the expression holds.
fn test(args: &[String]) -> i32 {
    fn holds(args: &[String]) -> bool {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match a.as_slice() {
            [] => false,
            ["!", rest @ ..] => !holds(&rest.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            [s] => !s.is_empty(),
            ["-n", s] => !s.is_empty(),
            ["-z", s] => s.is_empty(),
            ["-e", p] => std::fs::metadata(p).is_ok(),
            ["-f", p] => std::fs::metadata(p).is_ok_and(|m| m.is_file()),
            ["-d", p] => std::fs::metadata(p).is_ok_and(|m| m.is_dir()),
            ["-s", p] => std::fs::metadata(p).is_ok_and(|m| m.len() > 0),
            [x, "=", y] | [x, "==", y] => x == y,
            [x, "!=", y] => x != y,
            [x, op, y] => match (x.parse::<i64>(), y.parse::<i64>()) {
                (Ok(x), Ok(y)) => match *op {
                    "-eq" => x == y,
                    "-ne" => x != y,
                    "-lt" => x < y,
                    "-le" => x <= y,
                    "-gt" => x > y,
                    "-ge" => x >= y,
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        }
    }
    i32::from(!holds(args))
}

/// `grep [-q] [-v] [-i] [-c] PATTERN [FILE...]`: fixed-string matching per line.
fn grep(args: &[String], input: &mut Input, out: Sink, err: Sink) -> io::Result<i32> {
    let flags: String = args
        .iter()
        .filter(|a| a.starts_with('-') && a.len() > 1)
        .map(|a| &a[1..])
        .collect();
    let mut rest = args.iter().filter(|a| !(a.starts_with('-') && a.len() > 1));
    let Some(pattern) = rest.next() else {
        writeln!(err, "grep: usage: grep [-qvic] PATTERN [FILE...]")?;
        return Ok(2);
    };
    let fold = flags.contains('i');
    let pattern = if fold {
        pattern.to_lowercase()
    } else {
        pattern.clone()
    };
    let mut data = Vec::new();
    let files: Vec<&String> = rest.collect();
    if files.is_empty() {
        input.read_to_end(&mut data)?;
    } else {
        for f in files {
            match std::fs::read(f) {
                Ok(d) => data.extend(d),
                Err(e) => {
                    writeln!(err, "grep: {f}: {}", errno_text(&e))?;
                    return Ok(2);
                }
            }
        }
    }
    let mut count = 0;
    for line in String::from_utf8_lossy(&data).lines() {
        let hay = if fold {
            line.to_lowercase()
        } else {
            line.to_string()
        };
        if hay.contains(&pattern) != flags.contains('v') {
            count += 1;
            if !flags.contains('q') && !flags.contains('c') {
                writeln!(out, "{line}")?;
            }
        }
    }
    if flags.contains('c') {
        writeln!(out, "{count}")?;
    }
    Ok(i32::from(count == 0))
}

/// `dd [if=F] [of=F] [bs=N[KMG]] [count=N]`: copies blocks of `bs` bytes. `/dev/zero` as input
/// is a source of zeros and `/dev/null` as output discards, so `dd if=/dev/zero of=/dev/null
/// bs=20M` holds a 20 MiB buffer forever (critest's OOM check).
fn dd(args: &[String], input: &mut Input, out: Sink) -> io::Result<i32> {
    let opt = |k: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
    };
    let size = |v: &str| -> io::Result<usize> {
        let (num, mult) = match v.chars().last() {
            Some('K' | 'k') => (&v[..v.len() - 1], 1 << 10),
            Some('M') => (&v[..v.len() - 1], 1 << 20),
            Some('G') => (&v[..v.len() - 1], 1 << 30),
            _ => (v, 1),
        };
        num.parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("invalid number '{v}'"))
            })
    };
    let bs = opt("bs").map(size).transpose()?.unwrap_or(512);
    let count = opt("count").map(size).transpose()?;
    let mut buf = vec![0u8; bs];
    let zero = opt("if") == Some("/dev/zero");
    let mut src: Option<Box<dyn Read>> = match opt("if") {
        Some("/dev/zero") => None,
        Some(f) => Some(Box::new(std::fs::File::open(f)?)),
        None => None,
    };
    let null = opt("of") == Some("/dev/null");
    let mut dst: Option<std::fs::File> = match opt("of") {
        Some("/dev/null") | None => None,
        Some(f) => Some(std::fs::File::create(f)?),
    };
    let mut blocks = 0usize;
    while count.is_none_or(|c| blocks < c) {
        let n = if zero {
            // Touch every page, as reading from /dev/zero would.
            buf.iter_mut().step_by(4096).for_each(|b| *b = 0);
            std::hint::black_box(&mut buf);
            bs
        } else if let Some(r) = src.as_mut() {
            r.read(&mut buf)?
        } else {
            input.read(&mut buf)?
        };
        if n == 0 {
            break;
        }
        if !null {
            match dst.as_mut() {
                Some(f) => f.write_all(&buf[..n])?,
                None => out.write_all(&buf[..n])?,
            }
        }
        blocks += 1;
    }
    Ok(0)
}
