//! Products, their thing models and topic classes.

use axum::extract::State;
use axum::http::StatusCode;
use lotus_model::product::{DataFormat, NodeType};
use lotus_model::thing_model::ThingModel;
use lotus_model::topic::{TopicClass, TopicOperation, default_custom_topic_classes};
use lotus_storage::{NewProduct, Page, ProductRow, ProductUpdate, TopicClassRow};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};

fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// Product keys look like Alibaba's (`a1` + 9 characters) so SDK-side validation accepts them.
fn new_product_key() -> String {
    format!("a1{}", random_alnum(9))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProduct {
    pub name: String,
    #[schema(value_type = String, example = "direct")]
    pub node_type: NodeType,
    #[schema(value_type = String, example = "alink")]
    pub data_format: DataFormat,
    #[serde(default)]
    pub dynamic_registration: bool,
    /// With dynamic registration: also register devices that were not pre-created (`authType=regnwl`).
    #[serde(default)]
    pub allow_unregistered: bool,
    /// Refuse CONNECTs whose timestamp is further than this from the server's clock. Off when absent.
    pub replay_window_secs: Option<i64>,
    #[serde(default)]
    pub description: String,
    /// The owning organisation; the caller's when absent.
    pub org: Option<String>,
    /// The region its devices are in (each device may name its own); the caller's when absent.
    #[schema(example = "/hz/xihu")]
    pub region: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProduct {
    pub name: Option<String>,
    #[schema(value_type = Option<String>)]
    pub data_format: Option<DataFormat>,
    pub dynamic_registration: Option<bool>,
    pub allow_unregistered: Option<bool>,
    /// `0` turns the replay window off.
    pub replay_window_secs: Option<i64>,
    pub description: Option<String>,
    /// Move the product to another organisation (the caller must be allowed there too).
    pub org: Option<String>,
    /// Move the product, and its devices without a region of their own, to another region.
    pub region: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub product_key: String,
    /// Only in the response to creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_secret: Option<String>,
    pub name: String,
    #[schema(value_type = String)]
    pub node_type: NodeType,
    #[schema(value_type = String)]
    pub data_format: DataFormat,
    pub dynamic_registration: bool,
    pub allow_unregistered: bool,
    pub replay_window_secs: Option<i64>,
    pub description: String,
    pub thing_model_version: Option<i64>,
    pub device_count: i64,
    pub org: String,
    pub region: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<ProductRow> for Product {
    fn from(r: ProductRow) -> Self {
        Product {
            product_key: r.product_key,
            product_secret: None,
            name: r.name,
            node_type: r.node_type,
            data_format: r.data_format,
            dynamic_registration: r.dynamic_registration,
            allow_unregistered: r.allow_unregistered,
            replay_window_secs: r.replay_window_secs,
            description: r.description,
            thing_model_version: r.thing_model_version,
            device_count: r.device_count,
            org: r.scope.org,
            region: r.scope.region,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    /// 1-based.
    pub page: Option<i64>,
    /// At most 500.
    pub page_size: Option<i64>,
}

impl PageQuery {
    pub fn page(&self) -> ApiResult<(Page, i64, i64)> {
        let page = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(20);
        if page < 1 {
            return Err(ApiError::bad_request("page starts at 1"));
        }
        if !(1..=500).contains(&size) {
            return Err(ApiError::bad_request("pageSize must be between 1 and 500"));
        }
        Ok((
            Page {
                offset: (page - 1) * size,
                limit: size,
            },
            page,
            size,
        ))
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}

/// The scope a new product or device asks for, the caller's own for what it leaves out.
pub(crate) fn requested_scope(
    user: &Authenticated,
    org: Option<&str>,
    region: Option<&str>,
) -> ApiResult<lotus_model::scope::Scope> {
    Ok(lotus_model::scope::Scope {
        org: match org {
            Some(o) => lotus_model::scope::parse_org(o)
                .map_err(|e| ApiError::unprocessable(format!("org: {e}")))?,
            None => user.user.scope.org.clone(),
        },
        region: match region {
            Some(r) => lotus_model::scope::parse_region(r)
                .map_err(|e| ApiError::unprocessable(format!("region: {e}")))?,
            None => user.user.scope.region.clone(),
        },
    })
}

pub(crate) async fn product_or_404(state: &ApiState, pk: &str) -> ApiResult<ProductRow> {
    state
        .store
        .get_product(pk)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("product '{pk}' not found")))
}

/// Create a product. The product secret is shown only in this response.
#[utoipa::path(post, path = "/api/v1/products", tag = "products", security(("bearer" = [])),
    request_body = CreateProduct,
    responses((status = 201, body = Product), (status = 400, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    let scope = requested_scope(&user, req.org.as_deref(), req.region.as_deref())?;
    crate::authz::check(
        &state,
        &user,
        "product.write",
        crate::authz::resource("product", "", Some(&scope)),
    )?;
    crate::regions::require_known(&state, &scope.region).await?;
    crate::orgs::require_known(&state, &scope.org).await?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::unprocessable("name must be 1 to 64 characters"));
    }
    if req.replay_window_secs.is_some_and(|w| w <= 0) {
        return Err(ApiError::unprocessable(
            "replayWindowSecs must be positive (omit it to turn the window off)",
        ));
    }
    if req.allow_unregistered && !req.dynamic_registration {
        return Err(ApiError::unprocessable(
            "allowUnregistered needs dynamicRegistration",
        ));
    }
    let secret = random_alnum(16);
    let product = NewProduct {
        product_key: new_product_key(),
        name: name.to_string(),
        node_type: req.node_type,
        data_format: req.data_format,
        dynamic_registration: req.dynamic_registration,
        allow_unregistered: req.allow_unregistered,
        replay_window_secs: req.replay_window_secs,
        description: req.description,
        product_secret: secret.clone(),
        scope,
    };
    let row = state.store.create_product(&product).await?;
    for (template, op, description) in default_custom_topic_classes() {
        state
            .store
            .create_topic_class(&row.product_key, &template, op, &description)
            .await?;
    }
    state
        .plane
        .registry
        .refresh(&state.store, &row.product_key)
        .await?;
    tracing::info!(product = %row.product_key, "product created");
    let mut out = Product::from(row);
    out.product_secret = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// The longest product search accepted: longer than any name or key, so nothing is lost.
const MAX_SEARCH_CHARS: usize = 100;

/// What the product list takes: an optional search and the page.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ProductQuery {
    /// Part of the product's name or product key, any case (`%` and `_` are plain
    /// characters); at most 100 characters.
    #[param(example = "lamp")]
    pub search: Option<String>,
    /// 1-based.
    pub page: Option<i64>,
    /// At most 500.
    pub page_size: Option<i64>,
}

/// List products, optionally only those whose name or product key contains `search`.
#[utoipa::path(get, path = "/api/v1/products", tag = "products", security(("bearer" = [])),
    params(ProductQuery),
    responses((status = 200, body = Paged<Product>), (status = 400, body = crate::problem::Problem)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<ProductQuery>,
) -> ApiResult<Json<Paged<Product>>> {
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if let Some(n) = search
        .map(|s| s.chars().count())
        .filter(|&n| n > MAX_SEARCH_CHARS)
    {
        return Err(ApiError::bad_request(format!(
            "search must be at most {MAX_SEARCH_CHARS} characters (it has {n})"
        )));
    }
    let within = crate::authz::list_scope(&state, &user, "product")?;
    let (rows, total) = state
        .store
        .list_products(page, within.as_ref(), search)
        .await?;
    Ok(Json(Paged {
        items: rows
            .into_iter()
            .filter(|r| {
                crate::authz::allows(
                    &state,
                    &user,
                    "product.read",
                    crate::authz::resource("product", &r.product_key, Some(&r.scope)),
                )
            })
            .map(Product::from)
            .collect(),
        total,
        page: number,
        page_size: size,
    }))
}

/// Get a product.
#[utoipa::path(get, path = "/api/v1/products/{productKey}", tag = "products", security(("bearer" = [])),
    params(("productKey" = String, Path)), responses((status = 200, body = Product), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
) -> ApiResult<Json<Product>> {
    Ok(Json(
        crate::authz::product(&state, &user, "product", "read", &pk)
            .await?
            .into(),
    ))
}

/// Update a product's settings (fields left out are unchanged). Moving it to another
/// organisation or region closes the MQTT sessions of registered apps whose topic grants on it
/// the move takes away (or gives back); they reconnect under the new scope.
#[utoipa::path(patch, path = "/api/v1/products/{productKey}", tag = "products", security(("bearer" = [])),
    params(("productKey" = String, Path)), request_body = UpdateProduct,
    responses((status = 200, body = Product), (status = 404, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    Json(req): Json<UpdateProduct>,
) -> ApiResult<Json<Product>> {
    let current = crate::authz::product(&state, &user, "product", "write", &pk).await?;
    if req.org.is_some() || req.region.is_some() {
        // Moving a product needs the right to write where it goes as well as where it is.
        let target = lotus_model::scope::Scope {
            org: match &req.org {
                Some(o) => lotus_model::scope::parse_org(o)
                    .map_err(|e| ApiError::unprocessable(format!("org: {e}")))?,
                None => current.scope.org.clone(),
            },
            region: match &req.region {
                Some(r) => lotus_model::scope::parse_region(r)
                    .map_err(|e| ApiError::unprocessable(format!("region: {e}")))?,
                None => current.scope.region.clone(),
            },
        };
        crate::authz::check(
            &state,
            &user,
            "product.write",
            crate::authz::resource("product", &pk, Some(&target)),
        )?;
        if req.region.is_some() {
            crate::regions::require_known(&state, &target.region).await?;
        }
        if req.org.is_some() {
            crate::orgs::require_known(&state, &target.org).await?;
        }
    }
    if let Some(name) = &req.name
        && (name.trim().is_empty() || name.chars().count() > 64)
    {
        return Err(ApiError::unprocessable("name must be 1 to 64 characters"));
    }
    let update = ProductUpdate {
        name: req.name,
        data_format: req.data_format,
        dynamic_registration: req.dynamic_registration,
        allow_unregistered: req.allow_unregistered,
        replay_window_secs: req
            .replay_window_secs
            .map(|w| if w <= 0 { None } else { Some(w) }),
        description: req.description,
        org: req.org,
        region: req.region,
    };
    let row = state.store.update_product(&pk, &update).await?;
    state.plane.registry.refresh(&state.store, &pk).await?;
    if row.scope != current.scope {
        // Registered apps' MQTT sessions keep the topic grants they were admitted with; those
        // whose grant on this product the move takes away (or gives back) are closed, so that
        // they reconnect under the product's new scope. The move itself is done either way.
        if let Err(e) = state
            .plane
            .kick_apps_on_product_move(&pk, &current.scope, &row.scope)
            .await
        {
            tracing::error!(product = %pk, error = %e, "closing the MQTT sessions of apps after a product move failed");
        }
    }
    Ok(Json(row.into()))
}

/// Delete a product (it must have no devices).
#[utoipa::path(delete, path = "/api/v1/products/{productKey}", tag = "products", security(("bearer" = [])),
    params(("productKey" = String, Path)), responses((status = 204), (status = 409, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
) -> ApiResult<StatusCode> {
    crate::authz::product(&state, &user, "product", "delete", &pk).await?;
    state.store.delete_product(&pk).await?;
    state.plane.registry.refresh(&state.store, &pk).await?;
    // The binding row went with the product; a product re-created under the same key must
    // not inherit the old codec from memory.
    state.plane.codecs.set_binding(&pk, None);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingModelSaved {
    pub version: i64,
    pub properties: usize,
    pub events: usize,
    pub services: usize,
}

/// Upload the product's thing model (Alibaba Alink TSL JSON). Each upload is a new version.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/thing-model", tag = "thing models", security(("bearer" = [])),
    params(("productKey" = String, Path)), request_body(content = Object, description = "Alink TSL JSON"),
    responses((status = 200, body = ThingModelSaved), (status = 422, body = crate::problem::Problem)))]
pub async fn put_thing_model(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    Json(tsl): Json<Value>,
) -> ApiResult<Json<ThingModelSaved>> {
    crate::authz::product(&state, &user, "thing_model", "write", &pk).await?;
    let model = ThingModel::parse(&tsl)
        .map_err(|e| ApiError::unprocessable(format!("invalid thing model: {e}")))?;
    // Store the normalised full TSL so exports are what Alibaba's SDKs load.
    let version = state
        .store
        .put_thing_model(&pk, &model.to_full_tsl(&pk))
        .await?;
    state.plane.registry.refresh(&state.store, &pk).await?;
    tracing::info!(product = %pk, version, "thing model updated");
    Ok(Json(ThingModelSaved {
        version,
        properties: model.properties().len(),
        events: model.events().len(),
        services: model.services().len(),
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct VersionQuery {
    /// A past version; the latest when absent.
    pub version: Option<i64>,
}

/// Export the thing model as full Alink TSL (with the generated `post` event and `set`/`get` services).
#[utoipa::path(get, path = "/api/v1/products/{productKey}/thing-model", tag = "thing models", security(("bearer" = [])),
    params(("productKey" = String, Path), VersionQuery), responses((status = 200, body = Object), (status = 404, body = crate::problem::Problem)))]
pub async fn get_thing_model(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    crate::authz::product(&state, &user, "thing_model", "read", &pk).await?;
    let (_, tsl, _) = state
        .store
        .thing_model(&pk, q.version)
        .await?
        .ok_or_else(|| match q.version {
            Some(v) => {
                ApiError::not_found(format!("product '{pk}' has no thing model version {v}"))
            }
            None => ApiError::not_found(format!(
                "product '{pk}' has no thing model yet: PUT one first"
            )),
        })?;
    Ok(Json(tsl))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingModelVersion {
    pub version: i64,
    pub created_at: i64,
}

/// List the thing model's versions.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/thing-model/versions", tag = "thing models", security(("bearer" = [])),
    params(("productKey" = String, Path)), responses((status = 200, body = Vec<ThingModelVersion>)))]
pub async fn thing_model_versions(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
) -> ApiResult<Json<Vec<ThingModelVersion>>> {
    crate::authz::product(&state, &user, "thing_model", "read", &pk).await?;
    let versions = state.store.thing_model_versions(&pk).await?;
    Ok(Json(
        versions
            .into_iter()
            .map(|(version, created_at)| ThingModelVersion {
                version,
                created_at,
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicClassOut {
    /// A name for system classes, a number for custom ones.
    pub id: String,
    pub template: String,
    #[schema(value_type = String, example = "pub")]
    pub operation: TopicOperation,
    pub description: String,
    /// System classes are predefined and read-only.
    pub system: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicClassIn {
    /// Must start with `/${productKey}/${deviceName}/user/`.
    pub template: String,
    #[schema(value_type = String, example = "pub")]
    pub operation: TopicOperation,
    #[serde(default)]
    pub description: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicClassPatch {
    pub template: Option<String>,
    #[schema(value_type = Option<String>)]
    pub operation: Option<TopicOperation>,
    pub description: Option<String>,
}

fn custom_out(r: TopicClassRow) -> TopicClassOut {
    TopicClassOut {
        id: r.id.to_string(),
        template: r.template,
        operation: r.operation,
        description: r.description,
        system: false,
    }
}

/// List the product's topic classes: the predefined system ones and the custom ones.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/topic-classes", tag = "topic classes", security(("bearer" = [])),
    params(("productKey" = String, Path)), responses((status = 200, body = Vec<TopicClassOut>)))]
pub async fn list_topic_classes(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
) -> ApiResult<Json<Vec<TopicClassOut>>> {
    let product = crate::authz::product(&state, &user, "topic_class", "read", &pk).await?;
    let mut out: Vec<TopicClassOut> =
        lotus_model::topic::system_topic_classes_for(product.node_type)
            .into_iter()
            .map(|c| TopicClassOut {
                id: c.id,
                template: c.template,
                operation: c.operation,
                description: c.description,
                system: true,
            })
            .collect();
    out.extend(
        state
            .store
            .list_topic_classes(&pk)
            .await?
            .into_iter()
            .map(custom_out),
    );
    Ok(Json(out))
}

fn check_template(template: &str, op: TopicOperation) -> ApiResult<()> {
    TopicClass::custom("new", template, op, "")
        .map(|_| ())
        .map_err(|e| ApiError::unprocessable(e.to_string()))
}

/// Add a custom topic class; it applies to every device of the product at once.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/topic-classes", tag = "topic classes", security(("bearer" = [])),
    params(("productKey" = String, Path)), request_body = TopicClassIn,
    responses((status = 201, body = TopicClassOut), (status = 422, body = crate::problem::Problem)))]
pub async fn create_topic_class(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    Json(req): Json<TopicClassIn>,
) -> ApiResult<(StatusCode, Json<TopicClassOut>)> {
    crate::authz::product(&state, &user, "topic_class", "write", &pk).await?;
    check_template(&req.template, req.operation)?;
    let row = state
        .store
        .create_topic_class(&pk, &req.template, req.operation, &req.description)
        .await?;
    state.plane.registry.refresh(&state.store, &pk).await?;
    Ok((StatusCode::CREATED, Json(custom_out(row))))
}

fn custom_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| {
        ApiError::forbidden(format!(
            "topic class '{id}' is a system class: system classes are predefined and read-only"
        ))
    })
}

/// Change a custom topic class; connected devices see the change at once.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/topic-classes/{id}", tag = "topic classes", security(("bearer" = [])),
    params(("productKey" = String, Path), ("id" = String, Path)), request_body = TopicClassPatch,
    responses((status = 200, body = TopicClassOut), (status = 403, body = crate::problem::Problem)))]
pub async fn update_topic_class(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, id)): Path<(String, String)>,
    Json(req): Json<TopicClassPatch>,
) -> ApiResult<Json<TopicClassOut>> {
    let id = custom_id(&id)?;
    crate::authz::product(&state, &user, "topic_class", "write", &pk).await?;
    if let Some(t) = &req.template {
        check_template(t, req.operation.unwrap_or(TopicOperation::All))?;
    }
    let row = state
        .store
        .update_topic_class(
            &pk,
            id,
            req.template.as_deref(),
            req.operation,
            req.description.as_deref(),
        )
        .await?;
    state.plane.registry.refresh(&state.store, &pk).await?;
    Ok(Json(custom_out(row)))
}

/// Delete a custom topic class; connected devices lose it at once.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/topic-classes/{id}", tag = "topic classes", security(("bearer" = [])),
    params(("productKey" = String, Path), ("id" = String, Path)), responses((status = 204), (status = 403, body = crate::problem::Problem)))]
pub async fn delete_topic_class(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = custom_id(&id)?;
    crate::authz::product(&state, &user, "topic_class", "write", &pk).await?;
    state.store.delete_topic_class(&pk, id).await?;
    state.plane.registry.refresh(&state.store, &pk).await?;
    Ok(StatusCode::NO_CONTENT)
}
