// Package scim is the SCIM 2.0 (RFC 7643/7644) directory source: the
// resource model of Users and Groups, the filter language, PATCH, the
// PostgreSQL system of record, and the Source the sync engine reads.
//
// An identity provider (Entra ID, Okta, OneLogin, JumpCloud) pushes users
// and groups to dirsync's SCIM service provider (package
// internal/sync/scimapi serves it over HTTP); every accepted write is
// committed to PostgreSQL before it is acknowledged, and the account's
// Source turns what is stored into the same directory.Snapshot the
// pollers produce, so the mapper, the bindings and the engine's safety
// checks apply unchanged. Data flows one way: HTTP → Store (PostgreSQL) →
// Source.Snapshot → mapper → access cache.
//
// Everything here is written by hand (see docs/scim.md for why no library
// is used): the attribute schemas below are the one definition of what a
// request may carry, what a response shows and what /Schemas answers.
package scim

import "strings"

// Schema URNs (RFC 7643 §8.7, RFC 7644 §3.12, §3.5.2, §3.4.2).
const (
	URNUser               = "urn:ietf:params:scim:schemas:core:2.0:User"
	URNGroup              = "urn:ietf:params:scim:schemas:core:2.0:Group"
	URNEnterpriseUser     = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	URNError              = "urn:ietf:params:scim:api:messages:2.0:Error"
	URNPatchOp            = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	URNListResponse       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	URNServiceProviderCfg = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	URNResourceType       = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
	URNSchema             = "urn:ietf:params:scim:schemas:core:2.0:Schema"
)

// attrType is an attribute's data type (RFC 7643 §2.3).
type attrType string

const (
	tString    attrType = "string"
	tBoolean   attrType = "boolean"
	tComplex   attrType = "complex"
	tReference attrType = "reference"
	tDateTime  attrType = "dateTime"
	tBinary    attrType = "binary"
)

// Mutability and returned characteristics (RFC 7643 §7).
const (
	mutReadWrite = "readWrite"
	mutReadOnly  = "readOnly"
	mutWriteOnly = "writeOnly"
	mutImmutable = "immutable"
	retDefault   = "default"
	retAlways    = "always"
	retNever     = "never"
)

// attribute is one attribute definition of a schema.
type attribute struct {
	Name       string
	Type       attrType
	Multi      bool
	Required   bool
	CaseExact  bool
	Mutability string // default readWrite
	Returned   string // default "default"
	Uniqueness string // default none
	Canonical  []string
	RefTypes   []string
	Sub        []*attribute
	Desc       string
}

func (a *attribute) mutability() string {
	if a.Mutability == "" {
		return mutReadWrite
	}
	return a.Mutability
}

func (a *attribute) returned() string {
	if a.Returned == "" {
		return retDefault
	}
	return a.Returned
}

// sub returns the sub-attribute named name (case-insensitively), or nil.
func (a *attribute) sub(name string) *attribute { return find(a.Sub, name) }

func find(attrs []*attribute, name string) *attribute {
	for _, s := range attrs {
		if strings.EqualFold(s.Name, name) {
			return s
		}
	}
	return nil
}

// schema is one schema (core or extension).
type schema struct {
	ID    string
	Name  string
	Desc  string
	Attrs []*attribute
}

func (s *schema) attr(name string) *attribute { return find(s.Attrs, name) }

// resourceType is User or Group: its core schema and extensions.
type resourceType struct {
	Name       string
	Endpoint   string
	Desc       string
	Core       *schema
	Extensions []*schema
}

// extension returns the extension schema with URN urn, or nil.
func (rt *resourceType) extension(urn string) *schema {
	for _, e := range rt.Extensions {
		if strings.EqualFold(e.ID, urn) {
			return e
		}
	}
	return nil
}

func str(name, desc string) *attribute { return &attribute{Name: name, Type: tString, Desc: desc} }

// multiComplex is a multi-valued attribute with the usual value, display,
// type and primary sub-attributes (RFC 7643 §2.4).
func multiComplex(name, desc string, valueType attrType, caseExact bool, types ...string) *attribute {
	return &attribute{Name: name, Type: tComplex, Multi: true, Desc: desc, Sub: []*attribute{
		{Name: "value", Type: valueType, CaseExact: caseExact, Desc: "the value"},
		str("display", "a human-readable name, primarily used for display purposes"),
		{Name: "type", Type: tString, Canonical: types, Desc: "a label indicating the attribute's function"},
		{Name: "primary", Type: tBoolean, Desc: "the primary or preferred value"},
	}}
}

// userSchema is RFC 7643 §4.1 and §8.7.1.
var userSchema = &schema{ID: URNUser, Name: "User", Desc: "User Account", Attrs: []*attribute{
	{Name: "userName", Type: tString, Required: true, Uniqueness: "server",
		Desc: "unique identifier for the User, typically used to sign in; dirsync's sign-in email when no emails value is primary or work"},
	{Name: "name", Type: tComplex, Desc: "the components of the user's real name", Sub: []*attribute{
		str("formatted", "the full name"), str("familyName", "the family name"), str("givenName", "the given name"),
		str("middleName", "the middle name"), str("honorificPrefix", "the honorific prefix"), str("honorificSuffix", "the honorific suffix"),
	}},
	str("displayName", "the name of the User, suitable for display"),
	str("nickName", "the casual way to address the user"),
	{Name: "profileUrl", Type: tReference, RefTypes: []string{"external"}, Desc: "a fully qualified URL pointing to a page representing the User's online profile"},
	str("title", "the user's title"),
	str("userType", "the relationship between the organization and the user"),
	str("preferredLanguage", "the User's preferred written or spoken language"),
	str("locale", "the User's default location"),
	str("timezone", "the User's time zone in the 'Olson' format"),
	{Name: "active", Type: tBoolean, Desc: "the User's administrative status: false denies sign-in (reason suspended)"},
	{Name: "password", Type: tString, Mutability: mutWriteOnly, Returned: retNever, Desc: "accepted and discarded: dirsync never stores passwords"},
	multiComplex("emails", "email addresses; the primary one (else type work) is the sign-in email", tString, false, "work", "home", "other"),
	multiComplex("phoneNumbers", "phone numbers", tString, false, "work", "home", "mobile", "fax", "pager", "other"),
	multiComplex("ims", "instant messaging addresses", tString, false),
	multiComplex("photos", "URLs of photos of the User", tReference, true, "photo", "thumbnail"),
	{Name: "addresses", Type: tComplex, Multi: true, Desc: "physical mailing addresses", Sub: []*attribute{
		str("formatted", "the full mailing address"), str("streetAddress", "the street address"), str("locality", "the city or locality"),
		str("region", "the state or region"), str("postalCode", "the zip code or postal code"), str("country", "the country"),
		{Name: "type", Type: tString, Canonical: []string{"work", "home", "other"}, Desc: "a label"},
		{Name: "primary", Type: tBoolean, Desc: "the primary mailing address"},
	}},
	{Name: "groups", Type: tComplex, Multi: true, Mutability: mutReadOnly, Desc: "groups are managed through /Groups; ignored on input", Sub: []*attribute{
		{Name: "value", Type: tString, Mutability: mutReadOnly, Desc: "the group's id"},
		{Name: "$ref", Type: tReference, Mutability: mutReadOnly, RefTypes: []string{"Group"}, Desc: "the group's URI"},
		{Name: "display", Type: tString, Mutability: mutReadOnly, Desc: "the group's display name"},
		{Name: "type", Type: tString, Mutability: mutReadOnly, Canonical: []string{"direct", "indirect"}, Desc: "direct or indirect"},
	}},
	multiComplex("entitlements", "entitlements for the User", tString, false),
	multiComplex("roles", "roles for the User", tString, false),
	multiComplex("x509Certificates", "certificates issued to the User", tBinary, true),
}}

// enterpriseUserSchema is RFC 7643 §4.3.
var enterpriseUserSchema = &schema{ID: URNEnterpriseUser, Name: "EnterpriseUser", Desc: "Enterprise User", Attrs: []*attribute{
	str("employeeNumber", "a string identifier, typically numeric or alphanumeric"),
	str("costCenter", "the name of a cost center"),
	str("organization", "the name of an organization"),
	str("division", "the name of a division"),
	str("department", "the name of a department"),
	{Name: "manager", Type: tComplex, Desc: "the User's manager", Sub: []*attribute{
		{Name: "value", Type: tString, Desc: "the id of the manager's User"},
		{Name: "$ref", Type: tReference, RefTypes: []string{"User"}, Desc: "the URI of the manager's User"},
		{Name: "displayName", Type: tString, Mutability: mutReadOnly, Desc: "the manager's displayName"},
	}},
}}

// groupSchema is RFC 7643 §4.2 and §8.7.1.
var groupSchema = &schema{ID: URNGroup, Name: "Group", Desc: "Group", Attrs: []*attribute{
	{Name: "displayName", Type: tString, Required: true, Desc: "a human-readable name for the Group; bindings may name it"},
	{Name: "members", Type: tComplex, Multi: true, Desc: "members of the Group: Users or nested Groups of the same account", Sub: []*attribute{
		{Name: "value", Type: tString, Mutability: mutImmutable, CaseExact: true, Desc: "the id of the member"},
		{Name: "$ref", Type: tReference, Mutability: mutImmutable, RefTypes: []string{"User", "Group"}, Desc: "the URI of the member"},
		{Name: "display", Type: tString, Mutability: mutReadOnly, Desc: "the member's name (not stored)"},
		{Name: "type", Type: tString, Mutability: mutImmutable, Canonical: []string{"User", "Group"}, Desc: "User or Group"},
	}},
}}

// Common attributes (RFC 7643 §3.1) every resource has.
var (
	attrID         = &attribute{Name: "id", Type: tString, CaseExact: true, Mutability: mutReadOnly, Returned: retAlways, Uniqueness: "server", Desc: "the service provider's id"}
	attrExternalID = &attribute{Name: "externalId", Type: tString, CaseExact: true, Desc: "the provisioning client's id"}
	attrMeta       = &attribute{Name: "meta", Type: tComplex, Mutability: mutReadOnly, Desc: "resource metadata", Sub: []*attribute{
		{Name: "resourceType", Type: tString, CaseExact: true, Mutability: mutReadOnly, Desc: "User or Group"},
		{Name: "created", Type: tDateTime, Mutability: mutReadOnly, Desc: "when the resource was added"},
		{Name: "lastModified", Type: tDateTime, Mutability: mutReadOnly, Desc: "when the resource was last changed"},
		{Name: "location", Type: tReference, CaseExact: true, Mutability: mutReadOnly, Desc: "the resource's URI"},
		{Name: "version", Type: tString, CaseExact: true, Mutability: mutReadOnly, Desc: "the resource's version (its ETag)"},
	}}
)

// The two resource types dirsync serves.
var (
	userType = &resourceType{Name: "User", Endpoint: "/Users", Desc: "User Account", Core: userSchema,
		Extensions: []*schema{enterpriseUserSchema}}
	groupType = &resourceType{Name: "Group", Endpoint: "/Groups", Desc: "Group", Core: groupSchema}
)
