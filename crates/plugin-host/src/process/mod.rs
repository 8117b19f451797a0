//! Process isolation (`plugins.isolation = "process"`): each plugin library is opened by a
//! child process of its own and reached over a framed, versioned protocol on its stdin and
//! stdout. A crash, abort, signal or hang of the child is a coded error for the call in
//! flight; the host keeps serving and starts a new child on the next call.

mod child;
mod environment;
mod models;
mod pipes;
mod protocol;
mod reap;
mod supervisor;

pub use child::serve_child_if_asked;
pub(crate) use child::this_executable_serves_children;
pub use models::ProcessModel;
pub use supervisor::ChildPlugin;
