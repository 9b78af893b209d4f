package auth

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// UnaryServerInterceptor authenticates each call from its `authorization`
// and `x-scope-orgid` metadata (gRPC lower-cases header names), puts the
// tenant in the context for TenantFrom and calls the handler; a refused
// call returns an *Error, which grpc-go answers as Unauthenticated,
// PermissionDenied or InvalidArgument. onReject, when not nil, gets the
// reason.
//
// Caution: a service registered with a hand-written grpc.ServiceDesc must
// pass its calls through the interceptor argument of its MethodDesc
// handler, as generated code does; a handler that ignores that argument
// is never authenticated.
func (a *Authenticator) UnaryServerInterceptor(onReject func(reason string)) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authenticateGRPC(ctx)
		if err != nil {
			if onReject != nil {
				onReject(ReasonOf(err))
			}
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming calls.
func (a *Authenticator) StreamServerInterceptor(onReject func(reason string)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authenticateGRPC(ss.Context())
		if err != nil {
			if onReject != nil {
				onReject(ReasonOf(err))
			}
			return err
		}
		return handler(srv, &tenantStream{ServerStream: ss, ctx: ctx})
	}
}

func (a *Authenticator) authenticateGRPC(ctx context.Context) (context.Context, error) {
	var authorization, orgID string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		authorization = first(md, "authorization")
		orgID = first(md, "x-scope-orgid")
	}
	tenant, err := a.Tenant(authorization, orgID)
	if err != nil {
		return ctx, err
	}
	return NewContext(ctx, tenant), nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// tenantStream carries the authenticated context into a streaming handler.
type tenantStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *tenantStream) Context() context.Context { return s.ctx }
