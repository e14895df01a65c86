//! A data-only reader for Python pickles (protocols 0–5), as written by `torch.save`.
//!
//! Nothing in the stream is ever executed. `GLOBAL` produces an inert [`Value::Global`] naming a
//! module attribute, `REDUCE`/`NEWOBJ` produce an inert [`Value::Call`] recording what *would* have
//! been called, and `BUILD` an inert [`Value::Build`]. The checkpoint layer then recognises the few
//! shapes it understands (tensors, `OrderedDict`, `argparse.Namespace`) and treats everything else as
//! opaque data. Every length is checked against the bytes that remain before anything is allocated,
//! and a work budget bounds the cost of hostile streams that share and copy containers.

use std::collections::HashMap;
use std::rc::Rc;

/// Why a pickle stream was rejected. Offsets are byte positions inside the stream.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("pickle ends unexpectedly at byte {0}")]
    Truncated(usize),
    #[error("unsupported pickle opcode 0x{op:02x} at byte {pos}")]
    UnsupportedOpcode { op: u8, pos: usize },
    #[error("malformed pickle at byte {pos}: {what}")]
    Malformed { pos: usize, what: String },
    #[error("pickle is too complex to read safely (work budget exhausted at byte {0})")]
    Budget(usize),
    #[error("pickle nests deeper than {} levels (at byte {})", MAX_NESTING, .0)]
    TooDeep(usize),
    #[error("pickle takes longer than {} s to read (stopped at byte {})", TIME_BUDGET.as_secs(), .0)]
    TooSlow(usize),
}

/// One pickled value. Containers are reference counted so that memo sharing stays cheap.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for `i64`, as little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    List(Rc<Vec<Value>>),
    Tuple(Rc<Vec<Value>>),
    /// Insertion-ordered key/value pairs (Python dicts keep order; keys need not be hashable here).
    Dict(Rc<Vec<(Value, Value)>>),
    Set(Rc<Vec<Value>>),
    /// A reference to `module.name`, never resolved.
    Global {
        module: Rc<str>,
        name: Rc<str>,
    },
    /// What `callable(*args)` would have produced (REDUCE, NEWOBJ, NEWOBJ_EX).
    Call {
        callable: Rc<Value>,
        args: Rc<Value>,
    },
    /// What `obj.__setstate__(state)` would have produced (BUILD).
    Build {
        obj: Rc<Value>,
        state: Rc<Value>,
    },
    /// A persistent id (torch uses it for tensor storages).
    PersistentId(Rc<Value>),
}

impl Value {
    /// The string content, if this is a string.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is a (small) integer or a bool.
    #[must_use]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    #[must_use]
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// `Some((module, name))` if this is a global reference.
    #[must_use]
    pub fn as_global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// Looks up a string key in a dict (linear: pickled dicts here are small or read once).
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Upper bound on container elements created or copied while reading one stream, per input byte.
const BUDGET_PER_BYTE: usize = 64;
/// Upper bound on that work for any stream, whatever its size: about 400 MB of values at most.
/// Official checkpoints (model, optimizer state and options) need well under a million.
const MAX_BUDGET: usize = 8 << 20;
/// Wall-clock bound on reading one stream (official `data.pkl` files take milliseconds).
const TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
/// Deepest nesting a stream may build. Everything that walks, compares or drops a [`Value`]
/// recurses, so no deeper value is ever made: a crafted stream past it is refused while reading.
pub const MAX_NESTING: usize = 1000;
/// Deepest nesting shown by [`to_json`] (deeper parts are elided).
pub const MAX_DEPTH: usize = 200;

/// Reads a whole pickle stream and returns the value left by `STOP`.
pub fn parse(data: &[u8]) -> Result<Value, PickleError> {
    Machine::new(data).run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Values with their nesting depth (0 for scalars, 1 + the deepest item for containers).
    stack: Vec<(Value, usize)>,
    marks: Vec<usize>,
    memo: HashMap<u64, (Value, usize)>,
    budget: usize,
    ops: usize,
    started: std::time::Instant,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            budget: data.len().saturating_mul(BUDGET_PER_BYTE).clamp(1 << 16, MAX_BUDGET),
            ops: 0,
            started: std::time::Instant::now(),
        }
    }

    fn malformed<T>(&self, what: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError::Malformed { pos: self.pos, what: what.into() })
    }

    fn spend(&mut self, n: usize) -> Result<(), PickleError> {
        self.budget = self.budget.checked_sub(n.max(1)).ok_or(PickleError::Budget(self.pos))?;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(PickleError::Truncated(self.data.len()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le_uint(&mut self, n: usize) -> Result<u64, PickleError> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn len_prefixed(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let len = self.le_uint(n)?;
        let len = usize::try_from(len).map_err(|_| PickleError::Truncated(self.data.len()))?;
        self.take(len)
    }

    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        let nl = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated(self.data.len()))?;
        self.pos += nl + 1;
        Ok(&rest[..nl])
    }

    fn utf8(&self, b: &[u8]) -> Result<Rc<str>, PickleError> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Rc::from(s)),
            Err(_) => self.malformed("string is not valid UTF-8"),
        }
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.pop_deep().map(|(v, _)| v)
    }

    fn pop_deep(&mut self) -> Result<(Value, usize), PickleError> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.malformed("stack underflow"),
        }
    }

    fn top(&mut self) -> Result<&mut (Value, usize), PickleError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or(PickleError::Malformed { pos, what: "stack underflow".into() })
    }

    /// The items above the last MARK, and the depth a container holding them would have.
    fn pop_mark(&mut self) -> Result<(Vec<Value>, usize), PickleError> {
        let Some(mark) = self.marks.pop() else { return self.malformed("no MARK on the stack") };
        if mark > self.stack.len() {
            return self.malformed("MARK beyond the stack");
        }
        let items = self.stack.split_off(mark);
        let depth = items.iter().map(|(_, d)| d + 1).max().unwrap_or(1);
        Ok((items.into_iter().map(|(v, _)| v).collect(), depth))
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        self.push_deep(v, 0)
    }

    fn push_deep(&mut self, v: Value, depth: usize) -> Result<(), PickleError> {
        self.spend(1)?;
        self.check_depth(depth)?;
        self.stack.push((v, depth));
        Ok(())
    }

    fn check_depth(&self, depth: usize) -> Result<(), PickleError> {
        if depth > MAX_NESTING { Err(PickleError::TooDeep(self.pos)) } else { Ok(()) }
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some((v, d)) => {
                let (v, d) = (v.clone(), *d);
                self.push_deep(v, d)
            }
            None => self.malformed(format!("memo key {key} is not defined")),
        }
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.spend(1)?;
        self.memo.insert(key, v);
        Ok(())
    }

    /// Appends `items` (making a container `depth` deep) to the list or set on top of the stack
    /// (copy-on-write if it is shared).
    fn extend_top(&mut self, items: Vec<Value>, depth: usize) -> Result<(), PickleError> {
        let n = items.len();
        let pos = self.pos;
        let (top, top_depth) = self.top()?;
        *top_depth = (*top_depth).max(depth);
        if *top_depth > MAX_NESTING {
            return Err(PickleError::TooDeep(pos));
        }
        let cost = match top {
            Value::List(l) | Value::Set(l) => {
                let copied = if Rc::strong_count(l) > 1 { l.len() } else { 0 };
                Rc::make_mut(l).extend(items);
                copied + n
            }
            _ => return self.malformed("APPEND/ADDITEMS target is not a list or set"),
        };
        self.spend(cost)
    }

    fn set_items(&mut self, items: Vec<Value>, depth: usize) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return self.malformed("SETITEMS with an odd number of items");
        }
        let n = items.len() / 2;
        let pos = self.pos;
        let (top, top_depth) = self.top()?;
        *top_depth = (*top_depth).max(depth);
        if *top_depth > MAX_NESTING {
            return Err(PickleError::TooDeep(pos));
        }
        let cost = match top {
            Value::Dict(d) => {
                let copied = if Rc::strong_count(d) > 1 { d.len() } else { 0 };
                let d = Rc::make_mut(d);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                copied + n
            }
            _ => return self.malformed("SETITEM target is not a dict"),
        };
        self.spend(cost)
    }

    fn tuple_of(&mut self, n: usize) -> Result<(), PickleError> {
        if self.stack.len() < n {
            return self.malformed("stack underflow");
        }
        let items = self.stack.split_off(self.stack.len() - n);
        let depth = items.iter().map(|(_, d)| d + 1).max().unwrap_or(1);
        self.push_deep(Value::Tuple(Rc::new(items.into_iter().map(|(v, _)| v).collect())), depth)
    }

    fn int_from_text(&self, line: &[u8]) -> Result<Value, PickleError> {
        let s = std::str::from_utf8(line).unwrap_or("").trim_end_matches('L');
        match s {
            "00" => Ok(Value::Bool(false)),
            "01" => Ok(Value::Bool(true)),
            _ => match s.parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => self.malformed("bad integer literal"),
            },
        }
    }

    fn long_bytes(b: &[u8]) -> Value {
        if b.is_empty() {
            return Value::Int(0);
        }
        if b.len() <= 8 {
            let neg = b[b.len() - 1] & 0x80 != 0;
            let mut v: u64 = if neg { u64::MAX } else { 0 };
            for (i, &x) in b.iter().enumerate() {
                v &= !(0xffu64 << (8 * i));
                v |= u64::from(x) << (8 * i);
            }
            #[allow(clippy::cast_possible_wrap)]
            return Value::Int(v as i64);
        }
        Value::BigInt(Rc::from(b))
    }

    #[allow(clippy::too_many_lines)]
    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let op_pos = self.pos;
            self.ops += 1;
            if self.ops.is_multiple_of(1 << 14) && self.started.elapsed() > TIME_BUDGET {
                return Err(PickleError::TooSlow(op_pos));
            }
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.malformed(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let (v, d) = self.top()?.clone();
                    self.push_deep(v, d)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'I' => {
                    let l = self.line()?;
                    let v = self.int_from_text(l)?;
                    self.push(v)?;
                }
                b'L' => {
                    let l = self.line()?;
                    let v = self.int_from_text(l)?;
                    self.push(v)?;
                }
                b'J' => {
                    let b = self.take(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = self.le_uint(2)?;
                    self.push(Value::Int(v as i64))?;
                }
                0x8a => {
                    let b = self.len_prefixed(1)?;
                    self.push(Self::long_bytes(b))?;
                }
                0x8b => {
                    let b = self.len_prefixed(4)?;
                    self.push(Self::long_bytes(b))?;
                }
                b'F' => {
                    let l = self.line()?;
                    let v = std::str::from_utf8(l).ok().and_then(|s| s.trim().parse::<f64>().ok());
                    match v {
                        Some(f) => self.push(Value::Float(f))?,
                        None => return self.malformed("bad float literal"),
                    }
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?;
                }
                b'S' => {
                    let l = self.line()?;
                    let t = l.strip_prefix(b"'").and_then(|t| t.strip_suffix(b"'"));
                    let t = t.or_else(|| l.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")));
                    let Some(t) = t else { return self.malformed("bad STRING literal") };
                    let s = self.utf8(t)?;
                    self.push(Value::Str(s))?;
                }
                b'V' => {
                    let l = self.line()?;
                    let s = self.utf8(l)?;
                    self.push(Value::Str(s))?;
                }
                b'T' | 0x8d | b'U' | b'X' | 0x8c => {
                    let b = match op {
                        b'T' | b'X' => self.len_prefixed(4)?,
                        0x8d => self.len_prefixed(8)?,
                        _ => self.len_prefixed(1)?,
                    };
                    self.spend(b.len() / 64)?;
                    // Python 2 byte strings (T, U) are pickled text in torch files; keep bytes if not UTF-8.
                    match std::str::from_utf8(b) {
                        Ok(s) => self.push(Value::Str(Rc::from(s)))?,
                        Err(_) if matches!(op, b'T' | b'U') => self.push(Value::Bytes(Rc::from(b)))?,
                        Err(_) => return self.malformed("string is not valid UTF-8"),
                    }
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let b = match op {
                        b'B' => self.len_prefixed(4)?,
                        b'C' => self.len_prefixed(1)?,
                        _ => self.len_prefixed(8)?,
                    };
                    self.spend(b.len() / 64)?;
                    self.push(Value::Bytes(Rc::from(b)))?;
                }
                b']' => self.push(Value::List(Rc::new(Vec::new())))?,
                b'l' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_deep(Value::List(Rc::new(items)), d)?;
                }
                b'a' => {
                    let (v, d) = self.pop_deep()?;
                    self.extend_top(vec![v], d + 1)?;
                }
                b'e' => {
                    let (items, d) = self.pop_mark()?;
                    self.extend_top(items, d)?;
                }
                b')' => self.push(Value::Tuple(Rc::new(Vec::new())))?,
                b't' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_deep(Value::Tuple(Rc::new(items)), d)?;
                }
                0x85 => self.tuple_of(1)?,
                0x86 => self.tuple_of(2)?,
                0x87 => self.tuple_of(3)?,
                b'}' => self.push(Value::Dict(Rc::new(Vec::new())))?,
                b'd' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_deep(Value::Dict(Rc::new(Vec::new())), 1)?;
                    self.set_items(items, d)?;
                }
                b's' => {
                    let (v, dv) = self.pop_deep()?;
                    let (k, dk) = self.pop_deep()?;
                    self.set_items(vec![k, v], dv.max(dk) + 1)?;
                }
                b'u' => {
                    let (items, d) = self.pop_mark()?;
                    self.set_items(items, d)?;
                }
                0x8f => self.push(Value::Set(Rc::new(Vec::new())))?,
                0x90 => {
                    let (items, d) = self.pop_mark()?;
                    self.extend_top(items, d)?;
                }
                0x91 => {
                    let (items, d) = self.pop_mark()?;
                    self.push_deep(Value::Set(Rc::new(items)), d)?;
                }
                b'g' => {
                    let l = self.line()?;
                    let k = std::str::from_utf8(l).ok().and_then(|s| s.parse::<u64>().ok());
                    let Some(k) = k else { return self.malformed("bad GET index") };
                    self.memo_get(k)?;
                }
                b'h' => {
                    let k = self.le_uint(1)?;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.le_uint(4)?;
                    self.memo_get(k)?;
                }
                b'p' => {
                    let l = self.line()?;
                    let k = std::str::from_utf8(l).ok().and_then(|s| s.parse::<u64>().ok());
                    let Some(k) = k else { return self.malformed("bad PUT index") };
                    self.memo_put(k)?;
                }
                b'q' => {
                    let k = self.le_uint(1)?;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.le_uint(4)?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let (module, name) = (self.utf8(module)?, self.utf8(name)?);
                    self.push(Value::Global { module, name })?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => self.push(Value::Global { module, name })?,
                        _ => return self.malformed("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' | 0x81 => {
                    let (args, da) = self.pop_deep()?;
                    let (callable, dc) = self.pop_deep()?;
                    let d = da.max(dc) + 1;
                    // `OrderedDict()` is a plain container constructor: read it as a dict so SETITEMS
                    // can fill it. Nothing is called.
                    let empty = args.as_seq().is_some_and(<[Value]>::is_empty);
                    if empty && callable.as_global() == Some(("collections", "OrderedDict")) {
                        self.push(Value::Dict(Rc::new(Vec::new())))?;
                    } else {
                        self.push_deep(Value::Call { callable: Rc::new(callable), args: Rc::new(args) }, d)?;
                    }
                }
                0x92 => {
                    let (kwargs, dk) = self.pop_deep()?;
                    let (args, da) = self.pop_deep()?;
                    let (callable, dc) = self.pop_deep()?;
                    let d = (dk.max(da) + 1).max(dc) + 1;
                    let args = Value::Tuple(Rc::new(vec![args, kwargs]));
                    self.push_deep(Value::Call { callable: Rc::new(callable), args: Rc::new(args) }, d)?;
                }
                b'b' => {
                    let (state, ds) = self.pop_deep()?;
                    let (obj, d_obj) = self.pop_deep()?;
                    self.push_deep(Value::Build { obj: Rc::new(obj), state: Rc::new(state) }, ds.max(d_obj) + 1)?;
                }
                b'Q' => {
                    let (pid, d) = self.pop_deep()?;
                    self.push_deep(Value::PersistentId(Rc::new(pid)), d + 1)?;
                }
                b'P' => {
                    let l = self.line()?;
                    let s = self.utf8(l)?;
                    self.push(Value::PersistentId(Rc::new(Value::Str(s))))?;
                }
                _ => return Err(PickleError::UnsupportedOpcode { op, pos: op_pos }),
            }
        }
    }
}

/// Converts plain data (numbers, strings, containers) to JSON for display, with inert stand-ins for
/// globals and calls. Stops descending at [`MAX_DEPTH`] and after `budget` nodes.
#[must_use]
pub fn to_json(v: &Value, budget: &mut usize) -> serde_json::Value {
    to_json_at(v, budget, 0)
}

fn to_json_at(v: &Value, budget: &mut usize, depth: usize) -> serde_json::Value {
    use serde_json::Value as J;
    if depth > MAX_DEPTH || *budget == 0 {
        return J::String("…".into());
    }
    *budget -= 1;
    match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::BigInt(_) => J::String("<big integer>".into()),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number),
        Value::Str(s) => J::String(s.to_string()),
        Value::Bytes(b) => J::String(format!("<{} bytes>", b.len())),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
            J::Array(items.iter().map(|x| to_json_at(x, budget, depth + 1)).collect())
        }
        Value::Dict(items) => {
            let mut m = serde_json::Map::new();
            for (k, x) in items.iter() {
                let key = match k {
                    Value::Str(s) => s.to_string(),
                    other => to_json_at(other, budget, depth + 1).to_string(),
                };
                m.insert(key, to_json_at(x, budget, depth + 1));
            }
            J::Object(m)
        }
        Value::Global { module, name } => J::String(format!("<{module}.{name}>")),
        Value::Call { callable, .. } => match callable.as_global() {
            Some((m, n)) => J::String(format!("<{m}.{n}(…)>")),
            None => J::String("<call>".into()),
        },
        Value::Build { obj, state } => {
            // Objects rebuilt from a state dict (argparse.Namespace): show the state.
            if matches!(**state, Value::Dict(_)) {
                to_json_at(state, budget, depth + 1)
            } else {
                to_json_at(obj, budget, depth + 1)
            }
        }
        Value::PersistentId(_) => J::String("<persistent id>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_protocol2_structures() {
        // pickle.dumps({'a': [1, 2.5, 'x'], 'b': (True, None)}, protocol=2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03eX\x01\x00\x00\x00bq\x04\x88N\x86q\x05u.";
        let v = parse(data).unwrap();
        let a = v.get("a").unwrap().as_seq().unwrap();
        assert_eq!(a[0], Value::Int(1));
        assert_eq!(a[1], Value::Float(2.5));
        assert_eq!(a[2].as_str(), Some("x"));
        let b = v.get("b").unwrap().as_seq().unwrap();
        assert_eq!(b, &[Value::Bool(true), Value::None]);
    }

    #[test]
    fn global_and_reduce_stay_inert() {
        // cos\nsystem\n(S'echo pwned'\ntR.
        let data = b"cos\nsystem\n(S'echo pwned'\ntR.";
        let v = parse(data).unwrap();
        match v {
            Value::Call { callable, args } => {
                assert_eq!(callable.as_global(), Some(("os", "system")));
                assert_eq!(args.as_seq().unwrap()[0].as_str(), Some("echo pwned"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_opcodes_and_truncation() {
        assert!(matches!(parse(b"\x80\x02\xff."), Err(PickleError::UnsupportedOpcode { op: 0xff, .. })));
        assert!(matches!(parse(b"\x80\x02X\xff\xff\xff\x7f"), Err(PickleError::Truncated(_))));
        assert!(matches!(parse(b"\x80\x02"), Err(PickleError::Truncated(_))));
        assert!(matches!(parse(b"h\x05."), Err(PickleError::Malformed { .. })));
    }

    #[test]
    fn copy_on_write_storms_hit_the_budget() {
        // A shared 10000-item list copied on every append: quadratic work from a small stream.
        let mut data = b"\x80\x02](".to_vec();
        data.extend(std::iter::repeat_n(*b"K\x01", 10_000).flatten());
        data.extend_from_slice(b"eq\x00");
        data.extend(std::iter::repeat_n(*b"h\x00K\x01a0", 1_000).flatten());
        data.push(b'.');
        assert!(matches!(parse(&data), Err(PickleError::Budget(_))));
    }

    /// `n` nested one-item tuples around an empty one: `((((),),),)…`, via TUPLE1.
    fn nested_tuples(n: usize) -> Vec<u8> {
        let mut data = b"\x80\x02)".to_vec();
        data.extend(std::iter::repeat_n(0x85u8, n));
        data.push(b'.');
        data
    }

    #[test]
    fn lists_dicts_and_tuples_nested_200000_deep_are_refused_not_a_stack_overflow() {
        let n = 200_000;
        // [[[…]]]: n empty lists, each appended to the one below.
        let mut lists = b"\x80\x02".to_vec();
        lists.extend(std::iter::repeat_n(b']', n));
        lists.extend(std::iter::repeat_n(b'a', n - 1));
        lists.push(b'.');
        // {0: {0: {…}}}: n empty dicts, each set as the value of key 0 in the one below.
        let mut dicts = b"\x80\x02".to_vec();
        dicts.extend(std::iter::repeat_n(*b"}K\x00", n).flatten());
        dicts.pop();
        dicts.pop();
        dicts.extend(std::iter::repeat_n(b's', n - 1));
        dicts.push(b'.');
        // MARK-built lists: (((…l l l.
        let mut marked = b"\x80\x02".to_vec();
        marked.extend(std::iter::repeat_n(b'(', n));
        marked.extend(std::iter::repeat_n(b'l', n));
        marked.push(b'.');
        // REDUCE chains: f(f(f(…(None)))): n callables first, then TUPLE1 + REDUCE n times.
        let mut calls = b"\x80\x02cm\nf\nq\x00".to_vec();
        calls.extend(std::iter::repeat_n(*b"h\x00", n - 1).flatten());
        calls.push(b'N');
        calls.extend(std::iter::repeat_n(*b"\x85R", n).flatten());
        calls.push(b'.');
        // BUILD chains: obj.__setstate__(None) over and over.
        let mut builds = b"\x80\x02N".to_vec();
        builds.extend(std::iter::repeat_n(*b"Nb", n).flatten());
        builds.push(b'.');
        for (what, data) in [
            ("lists", lists),
            ("dicts", dicts),
            ("marks", marked),
            ("tuples", nested_tuples(n)),
            ("calls", calls),
            ("builds", builds),
        ] {
            match parse(&data) {
                Err(e @ PickleError::TooDeep(_)) => {
                    assert!(e.to_string().contains("nests deeper than 1000"), "{what}: {e}");
                }
                other => panic!("{what}: expected TooDeep, got {other:?}"),
            }
        }
    }

    #[test]
    fn values_as_deep_as_the_limit_are_read_and_dropped_on_a_small_stack() {
        // The window's worker and the fuzz harness read on threads; 256 KiB is far below their stacks.
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let v = parse(&nested_tuples(MAX_NESTING)).expect("a value exactly at the limit is fine");
                let mut budget = 10;
                let _ = to_json(&v, &mut budget);
                assert_eq!(v.clone(), v);
                drop(v);
                assert!(matches!(parse(&nested_tuples(MAX_NESTING + 1)), Err(PickleError::TooDeep(_))));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn sharing_through_the_memo_keeps_the_depth_it_had() {
        // A 600-deep tuple stored in the memo and put twice into a list is 601 deep, not 1200;
        // putting that list inside itself twice over (via the memo) does reach past the limit.
        let mut data = nested_tuples(600);
        data.pop();
        data.extend_from_slice(b"q\x00]h\x00ah\x00a.");
        assert!(parse(&data).is_ok());
        let mut data = nested_tuples(600);
        data.pop();
        data.extend_from_slice(b"\x85q\x00h\x00\x86q\x01h\x01\x86q\x02");
        data.extend(std::iter::repeat_n(*b"h\x02\x85q\x02", 400).flatten());
        data.push(b'.');
        assert!(matches!(parse(&data), Err(PickleError::TooDeep(_))));
    }

    #[test]
    fn long1_decodes_signed_little_endian() {
        assert_eq!(Machine::long_bytes(&[0xff]), Value::Int(-1));
        assert_eq!(Machine::long_bytes(&[0x00, 0x01]), Value::Int(256));
        assert_eq!(Machine::long_bytes(&[0x00, 0x80]), Value::Int(-32768));
    }
}
