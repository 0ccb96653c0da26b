"""HTTP routes of the workspaces domain: workspaces, members, API keys, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status

from nexus.core.errors import PermissionDenied
from nexus.storage.pagination import Paginated
from nexus.workspaces import service
from nexus.workspaces.deps import Authorize, CurrentPrincipal, DbSession, PageQuery, require_user
from nexus.workspaces.models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    MemberCreate,
    MemberRead,
    MemberUpdate,
    MeRead,
    Permission,
    Principal,
    UserRead,
    Workspace,
    WorkspaceCreate,
    WorkspaceRead,
    WorkspaceUpdate,
)

router = APIRouter()

ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
AdminPrincipal = Annotated[Principal, Authorize(Permission.ADMIN)]
PathReadPrincipal = Annotated[Principal, Authorize(Permission.READ, workspace_param="workspace_id")]
PathAdminPrincipal = Annotated[
    Principal, Authorize(Permission.ADMIN, workspace_param="workspace_id")
]


def _workspace_read(workspace: Workspace, principal: Principal | None = None) -> WorkspaceRead:
    read = WorkspaceRead.model_validate(workspace)
    if principal is not None:
        read.role = principal.role
    return read


def _key_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead.model_validate(key)


@router.get("/me", tags=["workspaces"], summary="Who is calling")
def read_me(principal: CurrentPrincipal, db: DbSession) -> MeRead:
    user = service.get_user(db, user_id=principal.user_id) if principal.user_id else None
    return MeRead(
        kind=principal.kind,
        workspace_id=principal.workspace_id,
        permissions=sorted(principal.permissions),
        role=principal.role,
        user=UserRead.model_validate(user) if user else None,
        key_id=principal.key_id,
    )


@router.get("/workspaces", tags=["workspaces"], summary="Workspaces the caller can see")
def list_workspaces(
    principal: CurrentPrincipal, db: DbSession, page: PageQuery
) -> Paginated[WorkspaceRead]:
    if principal.user_id is not None:
        roles = service.roles_of(db, user_id=principal.user_id)
        result = service.list_workspaces(
            db, user_id=principal.user_id, cursor=page.cursor, limit=page.limit
        )
        items = [_workspace_read(w) for w in result.items]
        for item in items:
            item.role = roles.get(item.id)
    else:
        if not principal.can(Permission.READ):
            raise PermissionDenied("This key may not read workspaces.")
        result = service.list_workspaces(
            db, workspace_id=principal.workspace_id, cursor=page.cursor, limit=page.limit
        )
        items = [_workspace_read(w) for w in result.items]
    return Paginated(items=items, next_cursor=result.next_cursor)


@router.post(
    "/workspaces",
    tags=["workspaces"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a workspace owned by the signed-in user (an admin of the current one)",
)
def create_workspace(
    body: WorkspaceCreate, principal: AdminPrincipal, db: DbSession
) -> WorkspaceRead:
    user_id = require_user(principal)
    workspace = service.create_workspace(
        db, name=body.name, owner_id=user_id, actor=service.actor_name(principal)
    )
    return _workspace_read(
        workspace, service.principal_for_user(db, user_id=user_id, workspace_id=workspace.id)
    )


@router.get("/workspaces/{workspace_id}", tags=["workspaces"], summary="One workspace")
def read_workspace(workspace_id: str, principal: PathReadPrincipal, db: DbSession) -> WorkspaceRead:
    return _workspace_read(service.get_workspace(db, workspace_id=workspace_id), principal)


@router.patch("/workspaces/{workspace_id}", tags=["workspaces"], summary="Rename a workspace")
def update_workspace(
    workspace_id: str, body: WorkspaceUpdate, principal: PathAdminPrincipal, db: DbSession
) -> WorkspaceRead:
    workspace = service.rename_workspace(
        db, workspace_id=workspace_id, name=body.name, actor=service.actor_name(principal)
    )
    return _workspace_read(workspace, principal)


@router.get("/members", tags=["members"], summary="Members of the workspace")
def list_members(principal: ReadPrincipal, db: DbSession, page: PageQuery) -> Paginated[MemberRead]:
    assert principal.workspace_id is not None
    result = service.list_members(
        db, workspace_id=principal.workspace_id, cursor=page.cursor, limit=page.limit
    )
    return Paginated(items=list(result.items), next_cursor=result.next_cursor)


@router.post(
    "/members",
    tags=["members"],
    status_code=status.HTTP_201_CREATED,
    summary="Add an existing user to the workspace",
)
def add_member(body: MemberCreate, principal: AdminPrincipal, db: DbSession) -> MemberRead:
    assert principal.workspace_id is not None
    return service.add_member(
        db, workspace_id=principal.workspace_id, email=body.email, role=body.role, actor=principal
    )


@router.get("/members/{user_id}", tags=["members"], summary="One member")
def read_member(user_id: str, principal: ReadPrincipal, db: DbSession) -> MemberRead:
    assert principal.workspace_id is not None
    return service.get_member(db, workspace_id=principal.workspace_id, user_id=user_id)


@router.patch("/members/{user_id}", tags=["members"], summary="Change a member's role")
def update_member(
    user_id: str, body: MemberUpdate, principal: AdminPrincipal, db: DbSession
) -> MemberRead:
    assert principal.workspace_id is not None
    return service.set_member_role(
        db, workspace_id=principal.workspace_id, user_id=user_id, role=body.role, actor=principal
    )


@router.delete(
    "/members/{user_id}",
    tags=["members"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member from the workspace",
)
def remove_member(user_id: str, principal: AdminPrincipal, db: DbSession) -> Response:
    assert principal.workspace_id is not None
    service.remove_member(db, workspace_id=principal.workspace_id, user_id=user_id, actor=principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/keys", tags=["keys"], summary="API keys of the workspace")
def list_keys(
    principal: ReadPrincipal,
    db: DbSession,
    page: PageQuery,
    include_revoked: bool = False,
) -> Paginated[ApiKeyRead]:
    assert principal.workspace_id is not None
    result = service.list_api_keys(
        db,
        workspace_id=principal.workspace_id,
        include_revoked=include_revoked,
        cursor=page.cursor,
        limit=page.limit,
    )
    return Paginated(items=[_key_read(k) for k in result.items], next_cursor=result.next_cursor)


@router.post(
    "/keys",
    tags=["keys"],
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key (a secret key's token is shown only in this response)",
)
def create_key(body: ApiKeyCreate, principal: AdminPrincipal, db: DbSession) -> ApiKeyCreated:
    assert principal.workspace_id is not None
    key, token = service.create_api_key(
        db,
        workspace_id=principal.workspace_id,
        name=body.name,
        kind=body.kind,
        scopes=None if body.scopes is None else [Permission(s) for s in body.scopes],
        created_by=principal.user_id,
        actor=principal,
    )
    return ApiKeyCreated(**_key_read(key).model_dump(), token=token)


@router.get("/keys/{key_id}", tags=["keys"], summary="One API key")
def read_key(key_id: str, principal: ReadPrincipal, db: DbSession) -> ApiKeyRead:
    assert principal.workspace_id is not None
    return _key_read(service.get_api_key(db, workspace_id=principal.workspace_id, key_id=key_id))


@router.delete(
    "/keys/{key_id}",
    tags=["keys"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key; it stops working at once",
)
def revoke_key(key_id: str, principal: AdminPrincipal, db: DbSession) -> Response:
    assert principal.workspace_id is not None
    service.revoke_api_key(
        db,
        workspace_id=principal.workspace_id,
        key_id=key_id,
        actor=service.actor_name(principal),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
