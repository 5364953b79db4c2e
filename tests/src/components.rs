//! Hand-written components in the WebAssembly text format, for shapes that
//! the Rust SDK never emits but a hostile author (or another toolchain)
//! can: several memories, many core instances, big tables.
//!
//! [`handler`] is the smallest component that implements the handler
//! world: its `handle` returns `done`. The other functions add core
//! instances beside it, instantiated (and so allocated) before any job
//! code runs.

/// A handler world component that returns `done`, with `extra` (component
/// level items: core modules and core instances) placed before it.
pub fn handler(extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  {extra}
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (block $ok
        (br_if $ok (i32.le_u (global.get $bump) (i32.shl (memory.size) (i32.const 16))))
        (br_if $ok (i32.ne (memory.grow (i32.add (i32.shr_u (global.get $bump) (i32.const 16)) (i32.const 1))) (i32.const -1)))
        unreachable)
      (local.get $p))
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16)))
  (core instance $i (instantiate $m))
  {exports}
)"#,
        exports = export_handle("$i", "$i"),
    );
    assemble(&text)
}

/// `count` core instances of a module whose memory grows to `mib` MiB when
/// instantiated: several linear memories, each within the job's limit.
pub fn memories(count: usize, mib: u32) -> String {
    let pages = mib * 16;
    let mut text = format!(
        "(core module $grow (memory 0) (func $s (drop (memory.grow (i32.const {pages})))) (start $s))\n"
    );
    for _ in 0..count {
        text.push_str("(core instance (instantiate $grow))\n");
    }
    text
}

/// Like [`memories`], writing every byte of each memory: a working set
/// the size of the job's memory limit.
pub fn memories_touched(count: usize, mib: u32) -> String {
    let pages = mib * 16;
    let bytes = mib << 20;
    let mut text = format!(
        "(core module $touch (memory 0) (func $s (drop (memory.grow (i32.const {pages}))) (memory.fill (i32.const 0) (i32.const 1) (i32.const {bytes}))) (start $s))\n"
    );
    for _ in 0..count {
        text.push_str("(core instance (instantiate $touch))\n");
    }
    text
}

/// One core instance with `tables` tables of `elements` function
/// references, every element written.
pub fn tables_filled(tables: usize, elements: u32) -> String {
    let defs: String = (0..tables)
        .map(|t| format!("(table $t{t} {elements} funcref) "))
        .collect();
    let fills: String = (0..tables)
        .map(|t| format!("(table.fill $t{t} (i32.const 0) (ref.func $f) (i32.const {elements})) "))
        .collect();
    format!(
        "(core module $fill {defs} (func $f) (elem declare func $f) (func $s {fills}) (start $s))\n(core instance (instantiate $fill))\n"
    )
}

/// `count` core instances of a module with `tables` tables of `elements`
/// function references each.
pub fn tables(count: usize, tables: usize, elements: u32) -> String {
    let defs = format!("(table {elements} funcref) ").repeat(tables);
    let mut text = format!("(core module $tables {defs})\n");
    for _ in 0..count {
        text.push_str("(core instance (instantiate $tables))\n");
    }
    text
}

/// `count` core instances of an empty module (each takes a slot of the
/// pool's core instances).
pub fn core_instances(count: usize) -> String {
    let mut text = String::from("(core module $empty)\n");
    for _ in 0..count {
        text.push_str("(core instance (instantiate $empty))\n");
    }
    text
}

/// A handler world component whose `handle` calls `wasi:random`'s
/// `get-random-bytes(len)` in a loop until something stops it: a long
/// synchronous host call, made again and again up to the deadline.
pub fn random_loop(len: u64) -> Vec<u8> {
    let text = format!(
        r#"(component
  (import "wasi:random/random@0.2.0" (instance $r
    (export "get-random-bytes" (func (param "len" u64) (result (list u8))))))
  (core module $mem
    (memory (export "memory") 1)
    ;; Every allocation gets the same buffer: a result is dropped before
    ;; the next call.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $need i32)
      (local.set $need (i32.add (i32.const 1024) (local.get 3)))
      (block $ok
        (br_if $ok (i32.le_u (local.get $need) (i32.shl (memory.size) (i32.const 16))))
        (br_if $ok (i32.ne (memory.grow (i32.add (i32.shr_u (local.get $need) (i32.const 16)) (i32.const 1))) (i32.const -1)))
        unreachable)
      (i32.const 1024)))
  (core instance $m (instantiate $mem))
  (core func $get (canon lower (func $r "get-random-bytes")
    (memory (core memory $m "memory")) (realloc (core func $m "realloc"))))
  (core module $main
    (import "env" "memory" (memory 1))
    (import "env" "get" (func $get (param i64 i32)))
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (loop $again
        (call $get (i64.const {len}) (i32.const 16))
        (br $again))
      (i32.const 16)))
  (core instance $i (instantiate $main
    (with "env" (instance (export "memory" (memory $m "memory")) (export "get" (func $get))))))
  {exports}
)"#,
        exports = export_handle("$i", "$m"),
    );
    assemble(&text)
}

/// The handler world's types and its `handle` export, lifted from the
/// core function `handle` of core instance `code`, with the memory and
/// `realloc` of core instance `memory`.
fn export_handle(code: &str, memory: &str) -> String {
    format!(
        r#"(type $job' (record (field "id" string) (field "queue" string) (field "payload" string) (field "attempt" u32) (field "max-attempts" u32)))
  (export $job "job" (type $job'))
  (type $retry' (record (field "reason" string) (field "delay-ms" (option u64))))
  (export $retry "retry-request" (type $retry'))
  (type $outcome' (variant (case "done") (case "retry" $retry) (case "fail" string)))
  (export $outcome "outcome" (type $outcome'))
  (func $handle (param "job" $job) (result $outcome)
    (canon lift (core func {code} "handle") (memory (core memory {memory} "memory")) (realloc (core func {memory} "realloc"))))
  (export "handle" (func $handle))"#
    )
}

/// A component from its text; a fixture that does not assemble is a bug
/// of the test.
fn assemble(text: &str) -> Vec<u8> {
    match wat::parse_str(text) {
        Ok(bytes) => bytes,
        Err(e) => panic!("fixture component does not assemble: {e}\n{text}"),
    }
}
