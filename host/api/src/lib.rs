//! The REST API (`/api/v1`), its OpenAPI 3.1 document and Swagger UI, device registration over
//! HTTPS, the operational endpoints, and the operators' portal at `/`.

pub mod access;
pub mod alarms;
pub mod applications;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod data_grants;
pub mod devices;
pub mod events;
pub mod live;
pub mod me;
pub mod messages;
pub mod notifications;
pub mod oidc;
pub mod ops;
pub mod orgs;
pub mod plugins;
pub mod policies;
pub mod portal;
pub mod problem;
pub mod products;
pub mod regions;
pub mod registration;
pub mod roles;
pub mod rules;
pub mod signature;
pub mod style;
pub mod tasks;
pub mod tls;
pub mod users;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{get, post, put};
use lotus_device::DevicePlane;
use lotus_storage::Store;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The largest request body of every route but the uploads.
pub const API_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Renders the Prometheus exposition text.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub plane: Arc<DevicePlane>,
    pub session_ttl_ms: i64,
    /// Failed log-ins in a row that lock an account (0: never), and for how long.
    pub lockout: auth::Lockout,
    pub metrics: Option<MetricsRender>,
    pub shutting_down: Arc<AtomicBool>,
    /// Compared against when a username does not exist, so timing reveals nothing.
    pub dummy_hash: Arc<str>,
    /// The Wasm plugin runtime; `None` on a node that runs none (the plugin routes say so).
    pub plugins: Option<Arc<dyn plugins::PluginManager>>,
    /// The `lotus.api` policy every route asks.
    pub policy: Arc<dyn authz::ApiPolicy>,
    /// Policy files and the decision log; `None` on a node that exposes neither.
    pub policy_admin: Option<Arc<dyn policies::PolicyAdmin>>,
    /// The event operations center (rules, alarms, events, workflows, tasks, messages);
    /// `None` on a node that runs none (its routes say so).
    pub operations: Option<lotus_operations::Operations>,
    /// The built portal (`index.html` and `assets/`); `None` on a node that serves none.
    pub portal_dir: Option<PathBuf>,
    /// The devices' live feeds.
    pub live: live::LiveHub,
    /// OpenID Connect: the provider for apps, and log-in through the city's provider.
    pub oidc: Arc<oidc::Oidc>,
    /// Checks the signed calls of registered apps (clock window, nonces seen).
    pub app_signatures: Arc<signature::AppSignatures>,
}

impl ApiState {
    pub fn new(
        store: Store,
        plane: Arc<DevicePlane>,
        session_ttl_ms: i64,
        metrics: Option<MetricsRender>,
        policy: Arc<dyn authz::ApiPolicy>,
    ) -> Self {
        ApiState {
            store,
            plane,
            session_ttl_ms,
            lockout: auth::Lockout::default(),
            metrics,
            shutting_down: Arc::new(AtomicBool::new(false)),
            dummy_hash: auth::hash_password("not a real password").into(),
            plugins: None,
            policy,
            policy_admin: None,
            operations: None,
            portal_dir: None,
            live: live::LiveHub::default(),
            oidc: Arc::new(oidc::Oidc::default()),
            app_signatures: Arc::new(signature::AppSignatures::new(
                signature::DEFAULT_WINDOW,
                lotus_device::now_ms(),
            )),
        }
    }

    /// Locks an account after `lockout.max_failures` failed log-ins in a row.
    pub fn with_lockout(mut self, lockout: auth::Lockout) -> Self {
        self.lockout = lockout;
        self
    }

    /// Accepts signed app calls whose timestamp is up to `window` from the node's clock.
    pub fn with_app_signature_window(mut self, window: std::time::Duration) -> Self {
        self.app_signatures = Arc::new(signature::AppSignatures::new(
            window,
            lotus_device::now_ms(),
        ));
        self
    }

    /// Serves the portal built in `dir` at `/`.
    pub fn with_portal(mut self, dir: PathBuf) -> Self {
        self.portal_dir = Some(dir);
        self
    }

    /// Gives the API the running operations center.
    pub fn with_operations(mut self, operations: lotus_operations::Operations) -> Self {
        self.operations = Some(operations);
        self
    }

    /// Gives the API the policy files and decision log to manage.
    pub fn with_policy_admin(mut self, admin: Arc<dyn policies::PolicyAdmin>) -> Self {
        self.policy_admin = Some(admin);
        self
    }

    /// Gives the API the plugin runtime to manage.
    /// Sets the node's public URL (the OpenID Connect issuer) and the external provider.
    pub fn with_oidc(mut self, settings: oidc::OidcSettings) -> Self {
        self.oidc = Arc::new(oidc::Oidc::new(settings));
        self
    }

    pub fn with_plugins(mut self, plugins: Arc<dyn plugins::PluginManager>) -> Self {
        self.plugins = Some(plugins);
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Lotus API", description = "Smart-city IoT platform: products, thing models, devices, data, downlinks and shadows."),
    paths(
        auth::login, auth::logout,
        products::create, products::list, products::get, products::update, products::delete,
        products::put_thing_model, products::get_thing_model, products::thing_model_versions,
        products::list_topic_classes, products::create_topic_class, products::update_topic_class, products::delete_topic_class,
        devices::create, devices::create_batch, devices::list, devices::list_all, devices::get, devices::update,
        devices::enable, devices::disable, devices::delete, devices::status_log,
        devices::properties, devices::history, devices::events,
        devices::set_properties, devices::invoke_service, devices::message,
        devices::get_shadow, devices::put_shadow, devices::sub_devices,
        registration::register_device, access::auth, access::publish,
        applications::create, applications::list, applications::get, applications::update, applications::delete,
        plugins::install, plugins::list, plugins::get, plugins::upgrade, plugins::rollback,
        plugins::disable, plugins::enable, plugins::resume, plugins::approve, plugins::delete, plugins::logs,
        plugins::dead_letters, plugins::get_codec, plugins::put_codec, plugins::delete_codec,
        plugins::list_secrets, plugins::put_secret, plugins::delete_secret, plugins::deliver,
        policies::list, policies::get, policies::put, policies::put_tests, policies::rollback,
        policies::decisions, users::create, users::list, users::get, users::update, users::reset_password, users::unlock, users::set_roles, audit::list, audit::verify,
        data_grants::put, data_grants::list, data_grants::delete,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Log in and out"),
        (name = "products", description = "Products: the template devices share"),
        (name = "thing models", description = "Alink TSL thing models, versioned"),
        (name = "topic classes", description = "Which topics a product's devices may publish and subscribe"),
        (name = "devices", description = "Device registry and status"),
        (name = "device data", description = "Latest values, history and events"),
        (name = "downlink", description = "Property set and service calls"),
        (name = "shadow", description = "Desired and reported state"),
        (name = "device access", description = "What devices call over HTTPS"),
        (name = "applications", description = "MQTT credentials for applications, confined to granted topic filters"),
        (name = "plugins", description = "Wasm plugins: install, upgrade, roll back, logs, dead letters, product codecs"),
        (name = "policies", description = "Rego policies that decide every permission, and the decision log"),
        (name = "users", description = "Operator accounts, their roles, organisation and region"),
        (name = "data permissions", description = "Data permission levels per product, with expiry; they decide which fields a read shows"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(rules::RulesDoc::openapi());
    doc.merge(events::EventsDoc::openapi());
    doc.merge(me::MeDoc::openapi());
    doc.merge(style::StyleDoc::openapi());
    doc.merge(live::LiveDoc::openapi());
    doc.merge(regions::RegionsDoc::openapi());
    doc.merge(orgs::OrgsDoc::openapi());
    doc.merge(roles::RolesDoc::openapi());
    doc.merge(apps::AppsDoc::openapi());
    doc.merge(oidc::OidcDoc::openapi());
    doc
}

/// The whole HTTP surface.
pub fn router(state: ApiState) -> Router {
    let dev = "/api/v1/products/{productKey}/devices/{deviceName}";
    let api = Router::new()
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route(
            "/api/v1/products",
            post(products::create).get(products::list),
        )
        .route(
            "/api/v1/products/{productKey}",
            get(products::get)
                .patch(products::update)
                .put(products::update)
                .delete(products::delete),
        )
        .route(
            "/api/v1/products/{productKey}/thing-model",
            put(products::put_thing_model).get(products::get_thing_model),
        )
        .route(
            "/api/v1/products/{productKey}/thing-model/versions",
            get(products::thing_model_versions),
        )
        .route(
            "/api/v1/products/{productKey}/topic-classes",
            get(products::list_topic_classes).post(products::create_topic_class),
        )
        .route(
            "/api/v1/products/{productKey}/topic-classes/{id}",
            put(products::update_topic_class)
                .patch(products::update_topic_class)
                .delete(products::delete_topic_class),
        )
        .route(
            "/api/v1/products/{productKey}/devices",
            post(devices::create).get(devices::list),
        )
        .route(
            "/api/v1/products/{productKey}/devices:batch",
            post(devices::create_batch),
        )
        .route("/api/v1/devices", get(devices::list_all))
        .route("/api/v1/plugins", get(plugins::list))
        .route(
            "/api/v1/plugins/{id}",
            get(plugins::get).delete(plugins::delete),
        )
        .route("/api/v1/plugins/{id}/rollback", post(plugins::rollback))
        .route("/api/v1/plugins/{id}/disable", post(plugins::disable))
        .route("/api/v1/plugins/{id}/enable", post(plugins::enable))
        .route("/api/v1/plugins/{id}/resume", post(plugins::resume))
        .route("/api/v1/plugins/{id}/approve", post(plugins::approve))
        .route("/api/v1/plugins/{id}/logs", get(plugins::logs))
        .route("/api/v1/plugins/{id}/secrets", get(plugins::list_secrets))
        .route("/api/v1/plugins/{id}/deliver", post(plugins::deliver))
        .route(
            "/api/v1/plugins/{id}/secrets/{name}",
            put(plugins::put_secret).delete(plugins::delete_secret),
        )
        .route("/api/v1/dead-letters", get(plugins::dead_letters))
        .route("/api/v1/policies", get(policies::list))
        .route(
            "/api/v1/policies/{package}",
            get(policies::get).put(policies::put),
        )
        .route("/api/v1/policies/{package}/tests", put(policies::put_tests))
        .route(
            "/api/v1/policies/{package}/rollback",
            post(policies::rollback),
        )
        .route("/api/v1/decisions", get(policies::decisions))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{username}",
            get(users::get).patch(users::update),
        )
        .route(
            "/api/v1/users/{username}/password",
            post(users::reset_password),
        )
        .route("/api/v1/users/{username}/unlock", post(users::unlock))
        .route("/api/v1/users/{username}/roles", put(users::set_roles))
        .route(
            "/api/v1/products/{productKey}/data-grants",
            get(data_grants::list),
        )
        .route(
            "/api/v1/products/{productKey}/data-grants/{username}",
            put(data_grants::put).delete(data_grants::delete),
        )
        .route(
            "/api/v1/products/{productKey}/codec",
            get(plugins::get_codec)
                .put(plugins::put_codec)
                .delete(plugins::delete_codec),
        )
        .route(
            "/api/v1/app-credentials",
            post(applications::create).get(applications::list),
        )
        .route(
            "/api/v1/app-credentials/{id}",
            get(applications::get)
                .patch(applications::update)
                .delete(applications::delete),
        )
        .route(
            dev,
            get(devices::get)
                .patch(devices::update)
                .delete(devices::delete),
        )
        .route(&format!("{dev}/enable"), post(devices::enable))
        .route(&format!("{dev}/disable"), post(devices::disable))
        .route(&format!("{dev}/status-log"), get(devices::status_log))
        .route(&format!("{dev}/sub-devices"), get(devices::sub_devices))
        .route(&format!("{dev}/properties"), get(devices::properties))
        .route(
            &format!("{dev}/properties:set"),
            post(devices::set_properties),
        )
        .route(
            &format!("{dev}/properties/{{identifier}}/history"),
            get(devices::history),
        )
        .route(&format!("{dev}/events"), get(devices::events))
        .route(
            &format!("{dev}/services/{{call}}"),
            post(devices::invoke_service),
        )
        .route(
            &format!("{dev}/messages/{{messageId}}"),
            get(devices::message),
        )
        .route(
            &format!("{dev}/shadow"),
            get(devices::get_shadow).put(devices::put_shadow),
        )
        .route("/auth/register/device", post(registration::register_device))
        .route("/auth", post(access::auth))
        // A device message is bounded like an MQTT packet, not like an API upload.
        .route(
            "/topic/{*topic}",
            post(access::publish).layer(axum::extract::DefaultBodyLimit::max(256 * 1024)),
        )
        .route(&format!("{dev}/live"), get(live::live))
        .merge(rules::routes())
        .merge(events::routes())
        .merge(me::routes())
        .merge(style::routes())
        .merge(regions::routes())
        .merge(orgs::routes())
        .merge(roles::routes())
        .merge(apps::routes())
        .merge(oidc::routes(state.clone()))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        // Only the portal's files are compressed here: the API's answers are small, and its
        // event streams must not be buffered by a compressor.
        .fallback(portal::fallback.layer(tower_http::compression::CompressionLayer::new()))
        .with_state(state.clone());
    // Signed app calls are checked where the body is at hand, before any route sees them.
    let verify_apps = axum::middleware::from_fn_with_state(state.clone(), signature::verify);
    // Components are bigger than any other request: the upload routes have their own limit,
    // enforced by the multipart reader so that going over it is a problem+json 413.
    let uploads = Router::new()
        .route("/api/v1/plugins", post(plugins::install))
        .route("/api/v1/plugins/{id}", put(plugins::upgrade))
        .layer(plugins::upload_limit())
        .with_state(state);
    api.merge(utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/v1/openapi.json", openapi()))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            API_BODY_LIMIT,
        ))
        .merge(uploads)
        .layer(verify_apps)
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!("request", method = %req.method(),
                        uri = %live::redact_token(req.uri()), version = ?req.version())
                },
            ),
        )
}
