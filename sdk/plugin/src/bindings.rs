//! Generated bindings of `lotus:plugin@0.1.0`.
//!
//! The host interfaces are generated once, from a world that only imports them, so that `log`,
//! `kv` and the shared `types` are the same Rust types in every world. A world that only imports
//! is safe to link into any plugin: the component linker keeps only the imports a plugin calls.
//! Each plugin world is generated behind its cargo feature: wit-bindgen links a description
//! of every generated world into the plugin, and a plugin should describe only its own.

wit_bindgen::generate!({
    inline: "
        package lotus:plugin-sdk;

        world host {
            import lotus:plugin/types@0.1.0;
            import lotus:plugin/log@0.1.0;
            import lotus:plugin/kv@0.1.0;
            import lotus:plugin/clock@0.1.0;
            import lotus:plugin/http@0.1.0;
            import lotus:plugin/device@0.1.0;
            import lotus:plugin/publish@0.1.0;
            import lotus:plugin/event@0.1.0;
            import lotus:plugin/secrets@0.1.0;
        }
    ",
    path: "../../wit/v0.1.0",
    world: "lotus:plugin-sdk/host",
    additional_derives: [PartialEq],
    generate_all,
});

pub use lotus::plugin::*;

/// Generates one plugin world, pointing its imports at the shared host bindings.
#[allow(unused_macros)] // with no world feature enabled
macro_rules! world_bindings {
    ($world:literal, $macro_name:literal, $module:literal, [$($interface:literal => $path:ident),*]) => {
        wit_bindgen::generate!({
            path: "../../wit/v0.1.0",
            world: $world,
            additional_derives: [PartialEq],
            with: {
                "lotus:plugin/types@0.1.0": crate::bindings::types,
                $($interface: crate::bindings::$path,)*
            },
            pub_export_macro: true,
            export_macro_name: $macro_name,
            default_bindings_module: $module,
            // The export macro embeds the world's full description where it is invoked.
            disable_custom_section_link_helpers: true,
        });
    };
}

#[cfg(feature = "codec")]
pub mod codec {
    world_bindings!(
        "lotus:plugin/codec@0.1.0",
        "__export_codec_world",
        "lotus_plugin_sdk::bindings::codec",
        ["lotus:plugin/log@0.1.0" => log, "lotus:plugin/kv@0.1.0" => kv, "lotus:plugin/clock@0.1.0" => clock]
    );
}

#[cfg(feature = "rule")]
pub mod rule {
    world_bindings!(
        "lotus:plugin/rule@0.1.0",
        "__export_rule_world",
        "lotus_plugin_sdk::bindings::rule",
        ["lotus:plugin/log@0.1.0" => log, "lotus:plugin/kv@0.1.0" => kv, "lotus:plugin/clock@0.1.0" => clock, "lotus:plugin/device@0.1.0" => device]
    );
}

#[cfg(feature = "event-handler")]
pub mod event_handler {
    world_bindings!(
        "lotus:plugin/event-handler@0.1.0",
        "__export_event_handler_world",
        "lotus_plugin_sdk::bindings::event_handler",
        ["lotus:plugin/log@0.1.0" => log, "lotus:plugin/kv@0.1.0" => kv, "lotus:plugin/clock@0.1.0" => clock, "lotus:plugin/device@0.1.0" => device, "lotus:plugin/event@0.1.0" => event]
    );
}

#[cfg(feature = "app")]
pub mod app {
    world_bindings!(
        "lotus:plugin/app@0.1.0",
        "__export_app_world",
        "lotus_plugin_sdk::bindings::app",
        ["lotus:plugin/log@0.1.0" => log, "lotus:plugin/kv@0.1.0" => kv, "lotus:plugin/clock@0.1.0" => clock, "lotus:plugin/http@0.1.0" => http, "lotus:plugin/device@0.1.0" => device, "lotus:plugin/publish@0.1.0" => publish, "lotus:plugin/event@0.1.0" => event, "lotus:plugin/secrets@0.1.0" => secrets]
    );
}

#[cfg(feature = "channel")]
pub mod channel {
    world_bindings!(
        "lotus:plugin/channel@0.1.0",
        "__export_channel_world",
        "lotus_plugin_sdk::bindings::channel",
        ["lotus:plugin/log@0.1.0" => log, "lotus:plugin/kv@0.1.0" => kv, "lotus:plugin/clock@0.1.0" => clock, "lotus:plugin/http@0.1.0" => http, "lotus:plugin/secrets@0.1.0" => secrets]
    );
}
