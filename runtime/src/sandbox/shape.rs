//! A cheap look at a component's structure before it is compiled.
//!
//! Compiling is the expensive part of loading a module: wasmtime flattens
//! every nested component instantiation into one list before it compiles,
//! so a few kilobytes that instantiate a component which instantiates
//! another twice, and so on, become millions of instances and gigabytes of
//! memory; and Cranelift's time grows with the size of a function. One
//! pass of the parser (linear in the module's bytes, no validation, no
//! code generation) measures what would be built, so such modules are
//! refused in milliseconds with the count, the limit and the setting.
//!
//! Counts are *after flattening*: a nested component instantiated twice
//! counts its core instances, memories and tables twice, recursively, as
//! wasmtime's pooling allocator counts them. Where the pass cannot tell
//! which module an instantiation uses (one imported or taken from another
//! instance's exports), it counts the memories and tables of the largest
//! module in the file, so the figures are never below wasmtime's own. A
//! component that instantiates a component it imports or takes from
//! another instance cannot be measured this way and is refused
//! ([`Refusal::OpaqueComponent`]); toolchains define the components they
//! instantiate.

use std::fmt;
use std::time::Duration;

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind,
    ComponentTypeRef, Instance, Parser, Payload,
};

use super::Limits;
use super::limits::{Bytes, Millis};
use crate::error::LoadError;

/// What one instance of a component would create, after flattening.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Core WebAssembly instances (each takes a slot of the worker's pool).
    pub core_instances: u64,
    /// Linear memories defined by those instances.
    pub memories: u64,
    /// Tables defined by those instances.
    pub tables: u64,
    /// Nested component instances.
    pub component_instances: u64,
    /// How deep components are nested; a lone component is 1.
    pub depth: u32,
    /// The largest function body, bytes.
    pub largest_function: u64,
}

/// The structural limits that hold for every queue (`[sandbox]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Structure {
    pub(super) max_depth: u32,
    pub(super) max_component_instances: u64,
    pub(super) max_function: u64,
}

/// Why a module was refused before or while compiling. Each names what
/// the module needs, the limit, and the setting that raises it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// More than a queue's ceiling on core instances, memories or tables
    /// ([`Limits::core_instances`] ...).
    Ceiling {
        /// What is counted: `core instances`, `memories`, `tables`.
        what: &'static str,
        /// What the module needs, after flattening.
        needs: u64,
        /// The ceiling.
        allows: u32,
        /// The per-queue setting: `max_core_instances` ...
        setting: &'static str,
        /// The queue whose ceiling it is, once known.
        queue: Option<String>,
    },
    /// Over one of the loader's own limits (`[sandbox]` settings).
    Loader {
        /// What the module is or does, and the limit: `is 40000000 bytes,
        /// over the limit of 32 MiB`.
        fact: String,
        /// The setting, under `[sandbox]`.
        setting: &'static str,
    },
    /// Compiling took longer than `sandbox.compile_timeout_ms`.
    CompileTime {
        /// The limit.
        limit: Duration,
    },
    /// Compiling needed more memory than `sandbox.compile_memory_mib`.
    CompileMemory {
        /// The limit, bytes.
        limit: u64,
    },
    /// It instantiates a component that it imports or takes from another
    /// instance's exports, whose cost cannot be known before compiling.
    OpaqueComponent,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Ceiling {
                what,
                needs,
                allows,
                setting,
                queue: Some(queue),
            } => write!(
                f,
                "needs {needs} {what}; queue {queue} allows {allows} ({setting})"
            ),
            Refusal::Ceiling {
                what,
                needs,
                allows,
                setting,
                queue: None,
            } => write!(f, "needs {needs} {what}; the limit is {allows} ({setting})"),
            Refusal::Loader { fact, setting } => write!(f, "{fact} (sandbox.{setting})"),
            Refusal::CompileTime { limit } => write!(
                f,
                "took longer than {} to compile (sandbox.compile_timeout_ms)",
                Millis(*limit)
            ),
            Refusal::CompileMemory { limit } => write!(
                f,
                "needed more than {} of memory to compile (sandbox.compile_memory_mib)",
                Bytes(*limit)
            ),
            Refusal::OpaqueComponent => f.write_str(
                "instantiates a component it imports or takes from another instance, whose size cannot be known before compiling; define nested components inside the module instead",
            ),
        }
    }
}

impl LoadError {
    /// The same error, naming `queue` as the owner of a ceiling it refers
    /// to (`queue q allows 8`).
    pub fn for_queue(self, queue: &str) -> LoadError {
        match self {
            LoadError::Refused {
                path,
                refusal:
                    Refusal::Ceiling {
                        what,
                        needs,
                        allows,
                        setting,
                        ..
                    },
            } => LoadError::Refused {
                path,
                refusal: Refusal::Ceiling {
                    what,
                    needs,
                    allows,
                    setting,
                    queue: Some(queue.to_string()),
                },
            },
            other => other,
        }
    }
}

impl Shape {
    /// Refuses a shape over a queue's ceilings.
    pub(super) fn within(&self, limits: &Limits) -> Result<(), Refusal> {
        let checks = [
            (
                "core instances",
                self.core_instances,
                limits.core_instances,
                "max_core_instances",
            ),
            ("memories", self.memories, limits.memories, "max_memories"),
            ("tables", self.tables, limits.tables, "max_tables"),
        ];
        for (what, needs, allows, setting) in checks {
            if needs > u64::from(allows) {
                return Err(Refusal::Ceiling {
                    what,
                    needs,
                    allows,
                    setting,
                    queue: None,
                });
            }
        }
        Ok(())
    }
}

/// Module or component index spaces hold, per index, the definition it
/// refers to, or this when the pass cannot tell (an import, or an export
/// of another instance).
const OPAQUE: u32 = u32::MAX;

/// What instantiating one definition costs, counted with multiplicity.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    core_instances: u64,
    memories: u64,
    tables: u64,
    /// Core instances of modules the pass cannot identify: each counts the
    /// memories and tables of the largest module.
    opaque_instances: u64,
    component_instances: u64,
}

impl Cost {
    fn add(&mut self, other: &Cost) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
        self.opaque_instances = self.opaque_instances.saturating_add(other.opaque_instances);
        self.component_instances = self
            .component_instances
            .saturating_add(other.component_instances);
    }
}

/// A component being read: its module and component index spaces, and
/// what instantiating it costs so far.
#[derive(Debug, Default)]
struct ComponentFrame {
    modules: Vec<u32>,
    components: Vec<u32>,
    cost: Cost,
}

/// A core module being read: the memories and tables it defines.
#[derive(Debug, Default)]
struct ModuleFrame {
    memories: u32,
    tables: u32,
}

#[derive(Debug)]
enum Frame {
    Component(ComponentFrame),
    Module(ModuleFrame),
}

/// What the pass found wrong.
#[derive(Debug)]
pub(super) enum Problem {
    /// Over a limit.
    Refused(Refusal),
    /// Not a well-formed component.
    Invalid(String),
}

impl Problem {
    pub(super) fn into_error(self, path: &std::path::Path) -> LoadError {
        match self {
            Problem::Refused(refusal) => LoadError::Refused {
                path: path.to_path_buf(),
                refusal,
            },
            Problem::Invalid(message) => LoadError::Invalid {
                path: path.to_path_buf(),
                message,
            },
        }
    }
}

impl From<wasmparser::BinaryReaderError> for Problem {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        Problem::Invalid(e.to_string())
    }
}

fn invalid(message: impl Into<String>) -> Problem {
    Problem::Invalid(message.into())
}

/// Measures the component in `bytes`, refusing it as soon as it is over
/// one of `limits`. Time and memory are linear in the size of `bytes`:
/// nothing is expanded, each definition's cost is computed once when its
/// definition ends, and nesting is refused before the parser's own stack
/// grows past the limit.
pub(super) fn measure(bytes: &[u8], limits: &Structure) -> Result<Shape, Problem> {
    let mut stack: Vec<Frame> = Vec::new();
    // Per module definition: (memories, tables); per component: its cost.
    // Components are at most `max_component_instances`; modules take 10
    // bytes of the file at least.
    let mut modules: Vec<(u32, u32)> = Vec::new();
    let mut components: Vec<Cost> = Vec::new();
    let mut shape = Shape::default();
    let mut root: Option<Cost> = None;
    // The next payload's `Version` starts the root, a module or a component.
    let mut next: Option<Frame> = Some(Frame::Component(ComponentFrame::default()));
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload?;
        if let Some(frame) = next.take() {
            if matches!(frame, Frame::Component(_)) {
                depth += 1;
                shape.depth = shape.depth.max(depth);
                if depth > limits.max_depth {
                    return Err(Problem::Refused(Refusal::Loader {
                        fact: format!("nests components more than {} deep", limits.max_depth),
                        setting: "max_component_depth",
                    }));
                }
            }
            stack.push(frame);
        }
        let Some(top) = stack.last_mut() else {
            return Err(invalid("data after the end of the component"));
        };
        match (payload, top) {
            (Payload::ModuleSection { .. }, Frame::Component(_)) => {
                next = Some(Frame::Module(ModuleFrame::default()));
            }
            (Payload::ComponentSection { .. }, Frame::Component(_)) => {
                // Every definition costs the compiler, instantiated or not.
                if components.len() as u64 >= limits.max_component_instances {
                    return Err(Problem::Refused(Refusal::Loader {
                        fact: format!(
                            "defines more than {} components",
                            limits.max_component_instances
                        ),
                        setting: "max_component_instances",
                    }));
                }
                next = Some(Frame::Component(ComponentFrame::default()));
            }
            (Payload::MemorySection(reader), Frame::Module(module)) => {
                for memory in reader {
                    memory?;
                    module.memories = module.memories.saturating_add(1);
                }
            }
            (Payload::TableSection(reader), Frame::Module(module)) => {
                for table in reader {
                    table?;
                    module.tables = module.tables.saturating_add(1);
                }
            }
            (Payload::CodeSectionEntry(body), Frame::Module(_)) => {
                let size = body.range().len() as u64;
                shape.largest_function = shape.largest_function.max(size);
                if size > limits.max_function {
                    return Err(Problem::Refused(Refusal::Loader {
                        fact: format!(
                            "has a function of {}, over the limit of {}",
                            Bytes(size),
                            Bytes(limits.max_function)
                        ),
                        setting: "max_function_kib",
                    }));
                }
            }
            (Payload::InstanceSection(reader), Frame::Component(component)) => {
                for instance in reader {
                    if let Instance::Instantiate { module_index, .. } = instance? {
                        let module = lookup(&component.modules, module_index, "module")?;
                        let cost = &mut component.cost;
                        cost.core_instances = cost.core_instances.saturating_add(1);
                        match modules.get(module as usize) {
                            Some(&(memories, tables)) => {
                                cost.memories = cost.memories.saturating_add(memories.into());
                                cost.tables = cost.tables.saturating_add(tables.into());
                            }
                            None => cost.opaque_instances = cost.opaque_instances.saturating_add(1),
                        }
                    }
                }
            }
            (Payload::ComponentInstanceSection(reader), Frame::Component(component)) => {
                for instance in reader {
                    if let ComponentInstance::Instantiate {
                        component_index, ..
                    } = instance?
                    {
                        let target = lookup(&component.components, component_index, "component")?;
                        let Some(cost) = components.get(target as usize) else {
                            return Err(Problem::Refused(Refusal::OpaqueComponent));
                        };
                        component.cost.add(cost);
                        component.cost.component_instances =
                            component.cost.component_instances.saturating_add(1);
                        if component.cost.component_instances > limits.max_component_instances {
                            return Err(too_many_components(limits));
                        }
                    }
                }
            }
            (Payload::ComponentImportSection(reader), Frame::Component(component)) => {
                for import in reader {
                    match import?.ty {
                        ComponentTypeRef::Module(_) => component.modules.push(OPAQUE),
                        ComponentTypeRef::Component(_) => component.components.push(OPAQUE),
                        _ => {}
                    }
                }
            }
            (Payload::ComponentExportSection(reader), Frame::Component(component)) => {
                // An export adds an index that refers to what it exports.
                for export in reader {
                    let export = export?;
                    match export.kind {
                        ComponentExternalKind::Module => {
                            let module = lookup(&component.modules, export.index, "module")?;
                            component.modules.push(module);
                        }
                        ComponentExternalKind::Component => {
                            let target = lookup(&component.components, export.index, "component")?;
                            component.components.push(target);
                        }
                        _ => {}
                    }
                }
            }
            (Payload::ComponentAliasSection(reader), Frame::Component(_)) => {
                for alias in reader {
                    alias_into(&mut stack, alias?)?;
                }
            }
            (Payload::End(_), _) => {
                let Some(frame) = stack.pop() else {
                    return Err(invalid("unbalanced end of a nested definition"));
                };
                match frame {
                    Frame::Module(module) => {
                        let id = u32::try_from(modules.len())
                            .map_err(|_| invalid("too many module definitions"))?;
                        modules.push((module.memories, module.tables));
                        match stack.last_mut() {
                            Some(Frame::Component(parent)) => parent.modules.push(id),
                            // A core module at the top: the header check
                            // refuses it before this pass runs.
                            _ => return Err(invalid("a core module, not a component")),
                        }
                    }
                    Frame::Component(component) => {
                        depth -= 1;
                        match stack.last_mut() {
                            Some(Frame::Component(parent)) => {
                                let id = u32::try_from(components.len())
                                    .map_err(|_| invalid("too many component definitions"))?;
                                components.push(component.cost);
                                parent.components.push(id);
                            }
                            Some(Frame::Module(_)) => {
                                return Err(invalid("a component inside a core module"));
                            }
                            None => root = Some(component.cost),
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let Some(cost) = root else {
        return Err(invalid("the component ends early"));
    };
    let largest =
        |pick: fn(&(u32, u32)) -> u32| modules.iter().map(pick).max().map_or(0, u64::from);
    let (memories, tables) = (largest(|m| m.0), largest(|m| m.1));
    shape.core_instances = cost.core_instances;
    shape.memories = cost
        .memories
        .saturating_add(cost.opaque_instances.saturating_mul(memories));
    shape.tables = cost
        .tables
        .saturating_add(cost.opaque_instances.saturating_mul(tables));
    shape.component_instances = cost.component_instances;
    Ok(shape)
}

fn too_many_components(limits: &Structure) -> Problem {
    Problem::Refused(Refusal::Loader {
        fact: format!(
            "creates more than {} component instances",
            limits.max_component_instances
        ),
        setting: "max_component_instances",
    })
}

/// The definition at `index` of an index space.
fn lookup(space: &[u32], index: u32, what: &str) -> Result<u32, Problem> {
    space
        .get(index as usize)
        .copied()
        .ok_or_else(|| invalid(format!("refers to {what} {index}, which is not defined")))
}

/// Adds the index an alias defines, for modules and components.
fn alias_into(stack: &mut [Frame], alias: ComponentAlias<'_>) -> Result<(), Problem> {
    let (module, target) = match alias {
        ComponentAlias::InstanceExport { kind, .. } => match kind {
            ComponentExternalKind::Module => (Some(OPAQUE), None),
            ComponentExternalKind::Component => (None, Some(OPAQUE)),
            _ => (None, None),
        },
        ComponentAlias::CoreInstanceExport { .. } => (None, None),
        ComponentAlias::Outer { kind, count, index } => {
            let outer = stack
                .len()
                .checked_sub(1 + count as usize)
                .and_then(|i| match &stack[i] {
                    Frame::Component(c) => Some(c),
                    Frame::Module(_) => None,
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "an outer alias goes {count} levels up, past the top"
                    ))
                })?;
            match kind {
                ComponentOuterAliasKind::CoreModule => {
                    (Some(lookup(&outer.modules, index, "module")?), None)
                }
                ComponentOuterAliasKind::Component => {
                    (None, Some(lookup(&outer.components, index, "component")?))
                }
                ComponentOuterAliasKind::CoreType | ComponentOuterAliasKind::Type => (None, None),
            }
        }
    };
    if let Some(Frame::Component(current)) = stack.last_mut() {
        current.modules.extend(module);
        current.components.extend(target);
    }
    Ok(())
}
