//! Hosts one plugin library in a child process for a model-manager host that runs plugins
//! with `plugins.isolation = "process"` (name it in `plugins.host_program`). Started by the
//! host with the library in its environment; run by hand it only explains itself.

fn main() {
    model_manager_plugin_host::serve_child_if_asked();
    eprintln!(
        "mm-plugin-host hosts a plugin library for a model-manager host with \
         `plugins.isolation = \"process\"`; the host starts it, set `plugins.host_program` to \
         this file"
    );
    std::process::exit(2);
}
