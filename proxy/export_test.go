package proxy

// ListsToken exposes listsToken to the external test package.
var ListsToken = listsToken
