#!/usr/bin/env bash
# App registrations for ctcs, with the Azure CLI (works in Azure Cloud Shell). docs/deploy.md explains each step.
#
#   1. In the tenant that holds the Function App (its "home" tenant):
#        az login --tenant <home tenant id> --allow-no-subscriptions
#        scripts/register-apps.sh create source "ctcs source reader" [<uami principal id>]
#        scripts/register-apps.sh create target "ctcs target writer" [<uami principal id>]
#      Both apps are multi-tenant; with a UAMI principal (object) id they trust the Function App's identity
#      (federated identity credential), so there is no secret or certificate to store or rotate. Run it again after
#      the identity was recreated (azd down, then azd up): a credential whose subject is no longer the identity's
#      principal id is replaced. Issuer, audience and the Graph host follow the active cloud (az cloud set).
#   2. In the source tenant, then in the target tenant (an admin who may grant app roles and directory roles):
#        az login --tenant <source tenant id> --allow-no-subscriptions
#        scripts/register-apps.sh grant source <source app id>
#      (CTCS_SYNC_GROUPS=1 before `create source` and `grant source` adds Group.Read.All, for pairs whose objects
#      include groups.)
#        az login --tenant <target tenant id> --allow-no-subscriptions
#        scripts/register-apps.sh grant target <target app id>
#      This creates the app's service principal in that tenant, grants the application permissions (admin consent)
#      and, for the target, assigns the Exchange Recipient Administrator role.
set -euo pipefail

# Well-known ids (the same in every tenant, in every cloud).
GRAPH_APP_ID=00000003-0000-0000-c000-000000000000                # Microsoft Graph
GRAPH_USER_READ_ALL=df021288-bdef-4463-88db-98f22de89214         # User.Read.All (application)
GRAPH_GROUPMEMBER_READ_ALL=98830695-27a2-44f7-8c18-0c3ebc9698f6  # GroupMember.Read.All (application)
GRAPH_GROUP_READ_ALL=5b567255-7703-4780-807c-7be8301ae99b        # Group.Read.All (application): groups as contacts
EXCHANGE_APP_ID=00000002-0000-0ff1-ce00-000000000000             # Office 365 Exchange Online
EXCHANGE_MANAGE_AS_APP=dc50a0fb-09a3-484d-be87-e023b12c6440      # Exchange.ManageAsApp (application)
EXCHANGE_RECIPIENT_ADMIN=31392ffb-586c-42d1-9346-e59415a2cc4e    # Exchange Recipient Administrator (role template id)
FEDERATED_NAME=ctcs-function-identity

# The active cloud's Entra authority and Graph host, and the audience a managed identity's token carries there
# (az cloud set --name AzureUSGovernment, AzureChinaCloud, or AzureCloud).
load_cloud() {
  local cloud_name graph_host
  cloud_name=$(az cloud show --query name -o tsv)
  AUTHORITY=$(az cloud show --query endpoints.activeDirectory -o tsv)
  AUTHORITY=${AUTHORITY%/}
  graph_host=$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)
  GRAPH="${graph_host%/}/v1.0"
  case "$cloud_name" in
    AzureUSGovernment) AUDIENCE=api://AzureADTokenExchangeUSGov ;;
    AzureChinaCloud) AUDIENCE=api://AzureADTokenExchangeChina ;;
    *) AUDIENCE=api://AzureADTokenExchange ;;
  esac
}

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

# The API and app roles each side needs.
api_of() { case "$1" in source) echo "$GRAPH_APP_ID" ;; target) echo "$EXCHANGE_APP_ID" ;; *) usage ;; esac; }
roles_of() {
  case "$1" in
    # Group.Read.All only where a pair syncs groups as contacts (CTCS_SYNC_GROUPS=1): least privilege otherwise.
    source) echo "$GRAPH_USER_READ_ALL $GRAPH_GROUPMEMBER_READ_ALL${CTCS_SYNC_GROUPS:+ $GRAPH_GROUP_READ_ALL}" ;;
    target) echo "$EXCHANGE_MANAGE_AS_APP" ;;
    *) usage ;;
  esac
}

create() {
  local side=$1 name=$2 uami=${3:-}
  local home app_id api role
  home=$(az account show --query tenantId -o tsv)
  api=$(api_of "$side")

  app_id=$(az ad app list --display-name "$name" --query "[0].appId" -o tsv)
  if [ -z "$app_id" ]; then
    app_id=$(az ad app create --display-name "$name" --sign-in-audience AzureADMultipleOrgs --query appId -o tsv)
    echo "created app registration '$name' ($app_id) in tenant $home"
  else
    echo "app registration '$name' already exists ($app_id); updating it"
  fi
  for role in $(roles_of "$side"); do
    az ad app permission add --id "$app_id" --api "$api" --api-permissions "$role=Role" --only-show-errors >/dev/null
  done

  if [ -n "$uami" ]; then
    federate "$app_id" "$home" "$uami"
  fi
  echo
  echo "client_id for the pair file ($side.client_id): $app_id"
  echo "next: sign in to the $side tenant and run: $0 grant $side $app_id"
}

# federate APP_ID HOME_TENANT UAMI_PRINCIPAL_ID: make the app trust the identity. An existing credential is checked by
# what it says, not by its name: a recreated identity has a new principal id (token exchange then fails with
# AADSTS700213), and a credential made for another cloud has another issuer or audience. Either is replaced.
federate() {
  local app_id=$1 home=$2 uami=$3 issuer existing
  issuer="$AUTHORITY/$home/v2.0"
  existing=$(az ad app federated-credential list --id "$app_id" \
    --query "[?name=='$FEDERATED_NAME'] | [0].[subject, issuer, audiences[0]]" -o tsv)
  if [ -n "$existing" ]; then
    if [ "$existing" = "$(printf '%s\t%s\t%s' "$uami" "$issuer" "$AUDIENCE")" ]; then
      echo "federated credential $FEDERATED_NAME already trusts $uami"
      return
    fi
    echo "federated credential $FEDERATED_NAME trusts another identity or cloud ($(printf '%s' "$existing" | tr '\t' ' ')); replacing it"
    az ad app federated-credential delete --id "$app_id" --federated-credential-id "$FEDERATED_NAME" --only-show-errors >/dev/null
  fi
  az ad app federated-credential create --id "$app_id" --only-show-errors --parameters "{
    \"name\": \"$FEDERATED_NAME\",
    \"issuer\": \"$issuer\",
    \"subject\": \"$uami\",
    \"audiences\": [\"$AUDIENCE\"],
    \"description\": \"The ctcs Function App's user-assigned managed identity\"
  }" >/dev/null
  echo "added federated credential: issuer $issuer, subject $uami, audience $AUDIENCE"
}

grant() {
  local side=$1 app_id=$2
  local tenant sp resource role existing
  tenant=$(az account show --query tenantId -o tsv)

  sp=$(az ad sp list --filter "appId eq '$app_id'" --query "[0].id" -o tsv)
  if [ -z "$sp" ]; then
    sp=$(az ad sp create --id "$app_id" --query id -o tsv)
    echo "created the service principal of $app_id in tenant $tenant"
  fi
  resource=$(az ad sp list --filter "appId eq '$(api_of "$side")'" --query "[0].id" -o tsv)
  if [ -z "$resource" ]; then
    echo "the $(api_of "$side") service principal is missing in tenant $tenant (no Exchange Online?)" >&2
    exit 1
  fi

  # Admin consent for application permissions = one app role assignment per permission.
  for role in $(roles_of "$side"); do
    existing=$(az rest --method GET --url "$GRAPH/servicePrincipals/$sp/appRoleAssignments" \
      --query "length(value[?appRoleId=='$role' && resourceId=='$resource'])" -o tsv)
    if [ "$existing" = "0" ]; then
      az rest --method POST --url "$GRAPH/servicePrincipals/$sp/appRoleAssignments" \
        --body "{\"principalId\": \"$sp\", \"resourceId\": \"$resource\", \"appRoleId\": \"$role\"}" >/dev/null
      echo "granted app role $role"
    else
      echo "app role $role already granted"
    fi
  done

  if [ "$side" = target ]; then
    existing=$(az rest --method GET \
      --url "$GRAPH/roleManagement/directory/roleAssignments?\$filter=principalId eq '$sp' and roleDefinitionId eq '$EXCHANGE_RECIPIENT_ADMIN'" \
      --query "length(value)" -o tsv)
    if [ "$existing" = "0" ]; then
      az rest --method POST --url "$GRAPH/roleManagement/directory/roleAssignments" \
        --body "{\"principalId\": \"$sp\", \"roleDefinitionId\": \"$EXCHANGE_RECIPIENT_ADMIN\", \"directoryScopeId\": \"/\"}" >/dev/null
      echo "assigned Exchange Recipient Administrator to the service principal"
    else
      echo "Exchange Recipient Administrator already assigned"
    fi
  fi
  echo
  echo "done: $side tenant $tenant trusts app $app_id"
}

case "${1:-}" in
  create) [ $# -ge 3 ] || usage; load_cloud; create "$2" "$3" "${4:-}" ;;
  grant) [ $# -eq 3 ] || usage; load_cloud; grant "$2" "$3" ;;
  *) usage ;;
esac
